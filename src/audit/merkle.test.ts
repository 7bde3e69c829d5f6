import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isAuditError } from './errors.ts';
import {
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  nodeHash,
  rootFromLeafHashes,
  verifyConsistency,
  verifyInclusion,
} from './merkle.ts';

// The checkpoint log is an RFC 6962 / RFC 9162 Merkle tree, so a tenant can
// check its proofs with any CT or transparency-dev tooling. These tests run
// every published probe: a proof the reference verifier rejects must be
// rejected here, and the proofs we generate must equal the published ones.

const VECTORS = fileURLToPath(new URL('../../../shared/vectors/merkle/', import.meta.url));
const hex = (s: string) => Buffer.from(s, 'hex');
const b64 = (s: string) => Buffer.from(s, 'base64');

interface Rfc6962Vectors {
  hashing: {
    emptyTreeRoot: string;
    leafHashes: { data: string; leafHash: string }[];
    nodeHashes: { left: string; right: string; nodeHash: string }[];
  };
  tree: {
    leaves: string[];
    completeSubtreeHashes: Record<'level0_leafHashes' | 'level1' | 'level2' | 'level3', string[]>;
    roots: { treeSize: number; root: string }[];
  };
  inclusionProofs: InclusionVector[];
  invalidInclusionProofs: (InclusionVector & { desc: string })[];
  edgeInclusionProofs: (InclusionVector & { desc: string; leafData: string })[];
  realWorldInclusionProof: InclusionVector & { leafData: string };
  consistencyProofs: ConsistencyVector[];
  invalidConsistencyProofs: (ConsistencyVector & { desc: string })[];
}
interface InclusionVector {
  leafIndex: number;
  treeSize: number;
  leafHash: string;
  root: string;
  proof: string[];
}
interface ConsistencyVector {
  size1: number;
  size2: number;
  root1: string;
  root2: string;
  proof: string[];
}

const rfc = JSON.parse(readFileSync(join(VECTORS, 'rfc6962-vectors.json'), 'utf8')) as Rfc6962Vectors;
const LEAF_HASHES = rfc.tree.leaves.map((data) => leafHash(hex(data)));

/** Every .json under a directory, listed rather than globbed: names contain `@`, `[` and `]`. */
function probeFiles(kind: 'inclusion' | 'consistency'): string[] {
  const root = join(VECTORS, 'transparency-dev', kind);
  return readdirSync(root, { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.json'))
    .map((name) => join(kind, name))
    .sort();
}

/** JSON.parse with the uint64 fields kept exact: 18446744073709551615 would otherwise round to 2^64. */
function readProbe(file: string): Record<string, unknown> {
  const text = readFileSync(join(VECTORS, 'transparency-dev', file), 'utf8');
  const quoted = text.replace(/"(leafIdx|treeSize|size1|size2)"\s*:\s*(\d+)/g, '"$1": "$2"');
  return JSON.parse(quoted) as Record<string, unknown>;
}

function outcome(check: () => void): string {
  try {
    check();
    return 'ok';
  } catch (error) {
    if (isAuditError(error)) return error.code;
    throw error;
  }
}

const proofOf = (value: unknown) => ((value ?? []) as string[]).map(b64);

// transparency-dev accepts equal sizes with equal 12-byte "roots"; we require 32-byte hashes (README, Semantics notes).
const STRICT_LENGTH_DIVERGENCE = 'consistency/additional/sizes-are-equal-one-and-proof-is-empty.json';
/** The valid probe of each base case, (leaf, size) or (size1, size2) in the README's table. */
const BASE_CASE = /^(?:inclusion|consistency)\/[0-4]\/happy-path\.json$/;

describe('transparency-dev/merkle probes (RFC 9162 §2.1.3.2, §2.1.4.2)', () => {
  const inclusion = probeFiles('inclusion');
  const consistency = probeFiles('consistency');

  test('AUD-4: all 196 probe files are found (98 inclusion, 98 consistency)', () => {
    assert.equal(inclusion.length, 98);
    assert.equal(consistency.length, 98);
    assert.ok(inclusion.some((file) => file.includes('@')));
    assert.equal([...inclusion, ...consistency].filter((file) => BASE_CASE.test(file)).length, 10);
  });

  for (const file of inclusion) {
    const probe = readProbe(file);
    test(`AUD-4: ${file} (${String(probe.desc)}) is ${probe.wantErr ? 'refused' : 'accepted'}`, () => {
      const [index, size] = [BigInt(probe.leafIdx as string), BigInt(probe.treeSize as string)];
      const proof = proofOf(probe.proof);
      const got = outcome(() =>
        verifyInclusion(index, size, b64(probe.leafHash as string), proof, b64(probe.root as string)),
      );
      assert.equal(got === 'ok', !probe.wantErr, got);
      if (BASE_CASE.test(file)) {
        // The base cases are proofs in the tree of rfc6962-vectors.json's 8 leaves.
        const tree = LEAF_HASHES.slice(0, Number(size));
        assert.deepEqual(rootFromLeafHashes(tree), b64(probe.root as string), 'the tree behind the probe');
        assert.deepEqual(inclusionProof(tree, Number(index)), proof, 'generated proof');
      }
    });
  }

  for (const file of consistency) {
    const probe = readProbe(file);
    const expectOk = !probe.wantErr && file !== STRICT_LENGTH_DIVERGENCE;
    test(`AUD-4: ${file} (${String(probe.desc)}) is ${expectOk ? 'accepted' : 'refused'}`, () => {
      const [size1, size2] = [BigInt(probe.size1 as string), BigInt(probe.size2 as string)];
      const proof = proofOf(probe.proof);
      const [root1, root2] = [b64(probe.root1 as string), b64(probe.root2 as string)];
      const got = outcome(() => verifyConsistency(size1, size2, root1, root2, proof));
      if (file === STRICT_LENGTH_DIVERGENCE) assert.equal(got, 'merkle_hash_length');
      assert.equal(got === 'ok', expectOk, got);
      if (BASE_CASE.test(file)) {
        const tree = LEAF_HASHES.slice(0, Number(size2));
        assert.deepEqual(rootFromLeafHashes(tree), root2, 'the tree behind the probe');
        assert.deepEqual(consistencyProof(tree, Number(size1)), proof, 'generated proof');
      }
    });
  }
});

describe('RFC 6962 vectors', () => {
  test('AUD-4: empty root, leaf hashes and node hashes', () => {
    assert.equal(EMPTY_ROOT.toString('hex'), rfc.hashing.emptyTreeRoot);
    assert.deepEqual(rootFromLeafHashes([]), EMPTY_ROOT);
    for (const v of rfc.hashing.leafHashes) assert.equal(leafHash(hex(v.data)).toString('hex'), v.leafHash);
    for (const v of rfc.hashing.nodeHashes)
      assert.equal(nodeHash(hex(v.left), hex(v.right)).toString('hex'), v.nodeHash);
  });

  test('AUD-4: complete subtree hashes and the roots of trees of 0 … 8 leaves', () => {
    const levels = rfc.tree.completeSubtreeHashes;
    assert.deepEqual(
      LEAF_HASHES.map((h) => h.toString('hex')),
      levels.level0_leafHashes,
    );
    for (const [level, width] of [
      ['level1', 2],
      ['level2', 4],
      ['level3', 8],
    ] as const) {
      const got = levels[level].map((_, i) =>
        rootFromLeafHashes(LEAF_HASHES.slice(i * width, (i + 1) * width)),
      );
      assert.deepEqual(
        got.map((h) => h.toString('hex')),
        levels[level],
      );
    }
    assert.equal(rfc.tree.roots.length, 9);
    for (const { treeSize, root } of rfc.tree.roots) {
      assert.equal(
        rootFromLeafHashes(LEAF_HASHES.slice(0, treeSize)).toString('hex'),
        root,
        `size ${treeSize}`,
      );
    }
  });

  test('AUD-4: inclusion proofs verify and equal the proofs we generate', () => {
    for (const v of [...rfc.inclusionProofs, rfc.realWorldInclusionProof, ...rfc.edgeInclusionProofs]) {
      verifyInclusion(
        BigInt(v.leafIndex),
        BigInt(v.treeSize),
        hex(v.leafHash),
        v.proof.map(hex),
        hex(v.root),
      );
    }
    for (const v of rfc.inclusionProofs) {
      assert.deepEqual(inclusionProof(LEAF_HASHES.slice(0, v.treeSize), v.leafIndex), v.proof.map(hex));
    }
    const real = rfc.realWorldInclusionProof;
    assert.equal(leafHash(hex(real.leafData)).toString('hex'), real.leafHash);
    for (const v of rfc.edgeInclusionProofs)
      assert.equal(leafHash(hex(v.leafData)).toString('hex'), v.leafHash, v.desc);
  });

  test('AUD-4: consistency proofs verify and equal the proofs we generate', () => {
    for (const v of rfc.consistencyProofs) {
      verifyConsistency(BigInt(v.size1), BigInt(v.size2), hex(v.root1), hex(v.root2), v.proof.map(hex));
      assert.deepEqual(consistencyProof(LEAF_HASHES.slice(0, v.size2), v.size1), v.proof.map(hex));
    }
  });

  test('AUD-4: the invalid inclusion and consistency proofs are refused', () => {
    for (const v of rfc.invalidInclusionProofs) {
      const args = [
        BigInt(v.leafIndex),
        BigInt(v.treeSize),
        hex(v.leafHash),
        v.proof.map(hex),
        hex(v.root),
      ] as const;
      assert.notEqual(
        outcome(() => verifyInclusion(...args)),
        'ok',
        v.desc,
      );
    }
    for (const v of rfc.invalidConsistencyProofs) {
      const args = [BigInt(v.size1), BigInt(v.size2), hex(v.root1), hex(v.root2), v.proof.map(hex)] as const;
      assert.notEqual(
        outcome(() => verifyConsistency(...args)),
        'ok',
        v.desc,
      );
    }
  });
});

describe('Merkle proofs we generate', () => {
  const leaves = Array.from({ length: 70 }, (_, i) => leafHash(Buffer.from(`leaf ${i}`)));

  test('AUD-4: every inclusion proof in trees of 1 … 70 leaves verifies, and fails for a neighbour', () => {
    for (let size = 1; size <= leaves.length; size++) {
      const tree = leaves.slice(0, size);
      const root = rootFromLeafHashes(tree);
      for (let i = 0; i < size; i++) {
        const proof = inclusionProof(tree, i);
        verifyInclusion(BigInt(i), BigInt(size), tree[i] as Buffer, proof, root);
        if (size > 1)
          assert.notEqual(
            outcome(() =>
              verifyInclusion(BigInt((i + 1) % size), BigInt(size), tree[i] as Buffer, proof, root),
            ),
            'ok',
          );
      }
    }
  });

  test('AUD-4: every consistency proof between sizes 1 ≤ m ≤ n ≤ 40 verifies, and fails against another old root', () => {
    for (let n = 1; n <= 40; n++) {
      const root2 = rootFromLeafHashes(leaves.slice(0, n));
      for (let m = 1; m <= n; m++) {
        const proof = consistencyProof(leaves.slice(0, n), m);
        const root1 = rootFromLeafHashes(leaves.slice(0, m));
        verifyConsistency(BigInt(m), BigInt(n), root1, root2, proof);
        const wrong = rootFromLeafHashes(leaves.slice(1, m + 1));
        assert.notEqual(
          outcome(() => verifyConsistency(BigInt(m), BigInt(n), wrong, root2, proof)),
          'ok',
        );
      }
    }
  });

  test('AUD-4: uint64 bounds: 2^64 − 1 is representable, 2^64 and negatives are refused, hashes must be 32 bytes', () => {
    const h = Buffer.alloc(32);
    const max = (1n << 64n) - 1n;
    assert.equal(
      outcome(() =>
        verifyInclusion(
          0n,
          max,
          h,
          Array.from({ length: 64 }, () => h),
          h,
        ),
      ),
      'merkle_root_mismatch',
    );
    assert.equal(
      outcome(() => verifyInclusion(max, max, h, [], h)),
      'merkle_size_invalid',
    );
    assert.equal(
      outcome(() => verifyInclusion(0n, 1n << 64n, h, [], h)),
      'merkle_size_invalid',
    );
    assert.equal(
      outcome(() => verifyInclusion(-1n, 1n, h, [], h)),
      'merkle_size_invalid',
    );
    assert.equal(
      outcome(() => verifyConsistency(1n, 1n << 64n, h, h, [h])),
      'merkle_size_invalid',
    );
    assert.equal(
      outcome(() => verifyInclusion(0n, 1n, Buffer.alloc(31), [], Buffer.alloc(31))),
      'merkle_hash_length',
    );
    assert.equal(
      outcome(() => verifyInclusion(0n, 2n, h, [Buffer.alloc(33)], h)),
      'merkle_hash_length',
    );
    assert.equal(
      outcome(() =>
        verifyInclusion(
          0n,
          2n,
          h,
          Array.from({ length: 65 }, () => h),
          h,
        ),
      ),
      'merkle_proof_length',
    );
    assert.throws(
      () => inclusionProof(leaves, leaves.length),
      (e) => isAuditError(e) && e.code === 'merkle_size_invalid',
    );
    assert.throws(
      () => consistencyProof(leaves, 0),
      (e) => isAuditError(e) && e.code === 'merkle_size_invalid',
    );
  });
});
