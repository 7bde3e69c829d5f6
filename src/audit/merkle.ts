import { createHash, timingSafeEqual } from 'node:crypto';
import { AuditError } from './errors.ts';

// RFC 6962 / RFC 9162 §2.1 Merkle hash trees with SHA-256 (AUD-4). The
// checkpoint log is such a tree; its leaves commit to tenant chain heads.
//
//   MTH({})     = SHA-256()
//   MTH({d0})   = SHA-256(0x00 ‖ d0)
//   MTH(D[n])   = SHA-256(0x01 ‖ MTH(D[0:k]) ‖ MTH(D[k:n])), k the largest power of two < n
//
// Generation takes the leaf hashes in memory and plain number indices.
// Verification takes bigint sizes, so every uint64 a proof may name (up to
// 2^64 − 1) is represented exactly, and refuses everything outside uint64.

export const MERKLE_HASH_LENGTH = 32;
/** The root of the empty tree, SHA-256 of nothing. Shared: never write into it. */
export const EMPTY_ROOT: Buffer = createHash('sha256').digest();

const UINT64_LIMIT = 1n << 64n;
const LEAF_PREFIX = Buffer.of(0x00);
const NODE_PREFIX = Buffer.of(0x01);

/** SHA-256(0x00 ‖ data). */
export function leafHash(data: Uint8Array): Buffer {
  return createHash('sha256').update(LEAF_PREFIX).update(data).digest();
}

/** SHA-256(0x01 ‖ left ‖ right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return createHash('sha256').update(NODE_PREFIX).update(left).update(right).digest();
}

/** MTH over leaf hashes (RFC 9162 §2.1.1); EMPTY_ROOT for none. */
export function rootFromLeafHashes(hashes: readonly Uint8Array[]): Buffer {
  if (hashes.length === 0) return Buffer.from(EMPTY_ROOT);
  return subtreeRoot(hashes, 0, hashes.length);
}

/** A run of leaves [start, end): a proof hash is the MTH of one such range. */
export type LeafRange = readonly [start: number, end: number];

/** The audit path of leaf `index` in the tree of all `leafHashes` (RFC 9162 §2.1.3.1, PATH(m, D[n])). */
export function inclusionProof(leafHashes: readonly Uint8Array[], index: number): Buffer[] {
  return inclusionRanges(leafHashes.length, index).map(([start, end]) => subtreeRoot(leafHashes, start, end));
}

/**
 * The leaf ranges whose MTHs make the audit path of leaf `index` in a tree of
 * `size` leaves, leaf-first. Which ranges does not depend on any hash, so a
 * store of subtree hashes can fetch exactly these (merkle-nodes.ts).
 */
export function inclusionRanges(size: number, index: number): LeafRange[] {
  if (!Number.isSafeInteger(index) || index < 0 || index >= size) {
    throw new AuditError('merkle_size_invalid', `leaf index ${index} is not in a tree of ${size}`);
  }
  const ranges: LeafRange[] = [];
  let [start, end, m] = [0, size, index];
  // Walk down from the root, collecting the sibling subtree at each level; the path is leaf-first.
  while (end - start > 1) {
    const k = largestPowerOfTwoBelow(end - start);
    if (m < k) {
      ranges.push([start + k, end]);
      end = start + k;
    } else {
      ranges.push([start, start + k]);
      start += k;
      m -= k;
    }
  }
  return ranges.reverse();
}

/** The proof that the first `oldSize` leaves are a prefix of all `leafHashes` (RFC 9162 §2.1.4.1, PROOF(m, D[n])). */
export function consistencyProof(leafHashes: readonly Uint8Array[], oldSize: number): Buffer[] {
  return consistencyRanges(leafHashes.length, oldSize).map(([start, end]) =>
    subtreeRoot(leafHashes, start, end),
  );
}

/** The leaf ranges whose MTHs make the consistency proof from `oldSize` to `size`, in proof order. */
export function consistencyRanges(size: number, oldSize: number): LeafRange[] {
  if (!Number.isSafeInteger(oldSize) || oldSize < 1 || oldSize > size) {
    throw new AuditError('merkle_size_invalid', `no consistency proof from size ${oldSize} to ${size}`);
  }
  const ranges: LeafRange[] = [];
  // SUBPROOF(m, D[start:end], wholeOldTree), unrolled; the path is root-first, then reversed.
  let [start, end, m, wholeOldTree] = [0, size, oldSize, true];
  while (m !== end - start) {
    const k = largestPowerOfTwoBelow(end - start);
    if (m <= k) {
      ranges.push([start + k, end]);
      end = start + k;
    } else {
      ranges.push([start, start + k]);
      start += k;
      m -= k;
      wholeOldTree = false;
    }
  }
  if (!wholeOldTree) ranges.push([start, end]);
  return ranges.reverse();
}

/**
 * RFC 9162 §2.1.3.2: that `leafHash` is leaf `leafIndex` of the tree of
 * `treeSize` leaves whose root is `root`. Returns on success; throws
 * AuditError `merkle_size_invalid`, `merkle_hash_length`,
 * `merkle_proof_length` or `merkle_root_mismatch`.
 */
export function verifyInclusion(
  leafIndex: bigint,
  treeSize: bigint,
  leafHash: Uint8Array,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): void {
  // Attacker-controlled: every argument (a proof from the server or a bundle).
  assertUint64(leafIndex, 'leaf index');
  assertUint64(treeSize, 'tree size');
  if (leafIndex >= treeSize) {
    throw new AuditError('merkle_size_invalid', `leaf index ${leafIndex} is not in a tree of ${treeSize}`);
  }
  // A uint64 tree is at most 64 levels deep; longer proofs are refused before any hashing.
  if (proof.length > 64) throw new AuditError('merkle_proof_length', 'inclusion proof is longer than 64');
  assertHashes([leafHash, root, ...proof]);
  let [fn, sn] = [leafIndex, treeSize - 1n];
  let r: Buffer = Buffer.from(leafHash);
  for (const p of proof) {
    if (sn === 0n)
      throw new AuditError('merkle_proof_length', 'inclusion proof is too long for the tree size');
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r);
      while ((fn & 1n) === 0n && fn !== 0n) [fn, sn] = [fn >> 1n, sn >> 1n];
    } else {
      r = nodeHash(r, p);
    }
    [fn, sn] = [fn >> 1n, sn >> 1n];
  }
  if (sn !== 0n)
    throw new AuditError('merkle_proof_length', 'inclusion proof is too short for the tree size');
  assertSameRoot(r, root, 'the inclusion proof');
}

/**
 * RFC 9162 §2.1.4.2: that the tree of `size1` leaves with root `root1` is a
 * prefix of the tree of `size2` leaves with root `root2`. Requires
 * 0 < size1 ≤ size2 < 2^64 (equal sizes need an empty proof and equal
 * roots). Returns on success; throws AuditError like verifyInclusion.
 */
export function verifyConsistency(
  size1: bigint,
  size2: bigint,
  root1: Uint8Array,
  root2: Uint8Array,
  proof: readonly Uint8Array[],
): void {
  // Attacker-controlled: every argument; root1 is usually our own earlier checkpoint.
  assertUint64(size1, 'size1');
  assertUint64(size2, 'size2');
  if (size1 > size2) throw new AuditError('merkle_size_invalid', `size1 ${size1} > size2 ${size2}`);
  if (size1 === 0n)
    throw new AuditError('merkle_size_invalid', 'a consistency proof from size 0 proves nothing');
  if (proof.length > 128) throw new AuditError('merkle_proof_length', 'consistency proof is longer than 128');
  assertHashes([root1, root2, ...proof]);
  if (size1 === size2) {
    if (proof.length !== 0) throw new AuditError('merkle_proof_length', 'equal sizes need an empty proof');
    assertSameRoot(root1, root2, 'root1');
    return;
  }
  if (proof.length === 0) throw new AuditError('merkle_proof_length', 'consistency proof is empty');
  const path = isPowerOfTwo(size1) ? [root1, ...proof] : [...proof];
  let [fn, sn] = [size1 - 1n, size2 - 1n];
  while ((fn & 1n) === 1n) [fn, sn] = [fn >> 1n, sn >> 1n];
  const [first, ...rest] = path as [Uint8Array, ...Uint8Array[]];
  let [fr, sr]: [Buffer, Buffer] = [Buffer.from(first), Buffer.from(first)];
  for (const c of rest) {
    if (sn === 0n) throw new AuditError('merkle_proof_length', 'consistency proof is too long for the sizes');
    if ((fn & 1n) === 1n || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while ((fn & 1n) === 0n && fn !== 0n) [fn, sn] = [fn >> 1n, sn >> 1n];
    } else {
      sr = nodeHash(sr, c);
    }
    [fn, sn] = [fn >> 1n, sn >> 1n];
  }
  if (sn !== 0n) throw new AuditError('merkle_proof_length', 'consistency proof is too short for the sizes');
  assertSameRoot(fr, root1, 'the proof from root1');
  assertSameRoot(sr, root2, 'the proof to root2');
}

function subtreeRoot(hashes: readonly Uint8Array[], start: number, end: number): Buffer {
  if (end - start === 1) return Buffer.from(hashes[start] as Uint8Array);
  const k = largestPowerOfTwoBelow(end - start);
  return nodeHash(subtreeRoot(hashes, start, start + k), subtreeRoot(hashes, start + k, end));
}

/** The largest power of two strictly below n, for n ≥ 2. */
function largestPowerOfTwoBelow(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

function isPowerOfTwo(n: bigint): boolean {
  return (n & (n - 1n)) === 0n;
}

function assertUint64(value: bigint, what: string): void {
  if (typeof value !== 'bigint' || value < 0n || value >= UINT64_LIMIT) {
    throw new AuditError('merkle_size_invalid', `${what} must be an integer in 0 … 2^64 − 1`);
  }
}

function assertHashes(hashes: readonly Uint8Array[]): void {
  for (const h of hashes) {
    if (!(h instanceof Uint8Array) || h.length !== MERKLE_HASH_LENGTH) {
      throw new AuditError('merkle_hash_length', 'every hash must be 32 bytes');
    }
  }
}

function assertSameRoot(computed: Uint8Array, expected: Uint8Array, what: string): void {
  if (!timingSafeEqual(computed, expected)) {
    throw new AuditError('merkle_root_mismatch', `${what} does not lead to the expected root`);
  }
}
