import { createHash } from 'node:crypto';
import { AuditError } from './errors.ts';
import { EMPTY_ROOT, MERKLE_HASH_LENGTH } from './merkle.ts';

// Every level of an RFC 6962 Merkle tree, kept in memory, so many inclusion
// proofs (every leaf of one tenant, for its recovery bundle) cost O(log n)
// each after one O(n) build. Built bottom-up: nodes pair left to right, and a
// last node without a partner moves up a level unchanged. That is the same
// tree as RFC 9162 §2.1.1's split at the largest power of two below n (its
// left subtrees are always perfect), so roots and proofs equal merkle.ts's;
// merkle-levels.test.ts checks that for every size up to 130.

const NODE_PREFIX = Buffer.of(0x01);

export class MerkleLevels {
  /** levels[0] holds the leaf hashes; each level is one buffer of 32-byte hashes. */
  readonly #levels: Buffer[];
  readonly #counts: number[];

  constructor(leafHashes: readonly Uint8Array[]) {
    const leaves = Buffer.alloc(leafHashes.length * MERKLE_HASH_LENGTH);
    leafHashes.forEach((hash, i) => {
      if (hash.length !== MERKLE_HASH_LENGTH)
        throw new AuditError('merkle_hash_length', 'leaf hashes are 32 bytes');
      leaves.set(hash, i * MERKLE_HASH_LENGTH);
    });
    this.#levels = [leaves];
    this.#counts = [leafHashes.length];
    let count = leafHashes.length;
    let level = leaves;
    while (count > 1) {
      const parents = Math.ceil(count / 2);
      const next = Buffer.alloc(parents * MERKLE_HASH_LENGTH);
      for (let i = 0; i + 1 < count; i += 2) {
        createHash('sha256')
          .update(NODE_PREFIX)
          .update(level.subarray(i * MERKLE_HASH_LENGTH, (i + 2) * MERKLE_HASH_LENGTH))
          .digest()
          .copy(next, (i / 2) * MERKLE_HASH_LENGTH);
      }
      if (count % 2 === 1)
        level.copy(next, (parents - 1) * MERKLE_HASH_LENGTH, (count - 1) * MERKLE_HASH_LENGTH);
      this.#levels.push(next);
      this.#counts.push(parents);
      count = parents;
      level = next;
    }
  }

  get size(): number {
    return this.#counts[0] ?? 0;
  }

  root(): Buffer {
    if (this.size === 0) return Buffer.from(EMPTY_ROOT);
    return Buffer.from((this.#levels.at(-1) as Buffer).subarray(0, MERKLE_HASH_LENGTH));
  }

  /** The RFC 9162 audit path of leaf `index`, leaf-first. */
  inclusionProof(index: number): Buffer[] {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.size) {
      throw new AuditError('merkle_size_invalid', `leaf index ${index} is not in a tree of ${this.size}`);
    }
    const proof: Buffer[] = [];
    let i = index;
    for (let depth = 0; depth < this.#levels.length - 1; depth++) {
      const sibling = i ^ 1;
      // A node without a sibling at this level moved up unchanged: no path element.
      if (sibling < (this.#counts[depth] as number)) {
        const level = this.#levels[depth] as Buffer;
        proof.push(
          Buffer.from(level.subarray(sibling * MERKLE_HASH_LENGTH, (sibling + 1) * MERKLE_HASH_LENGTH)),
        );
      }
      i >>= 1;
    }
    return proof;
  }
}
