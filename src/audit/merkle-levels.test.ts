import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { inclusionProof, leafHash, rootFromLeafHashes, verifyInclusion } from './merkle.ts';
import { MerkleLevels } from './merkle-levels.ts';

// The bundle's per-leaf inclusion proofs come from MerkleLevels; they must be
// exactly RFC 9162's, which merkle.ts computes the slow way and is checked
// against the shared conformance vectors.

const leaves = (n: number) =>
  Array.from({ length: n }, (_, i) => leafHash(createHash('sha256').update(`leaf ${i}`).digest()));

test('AUD-4: MerkleLevels gives the RFC 9162 root and every inclusion proof for every tree size up to 130', () => {
  for (let size = 0; size <= 130; size++) {
    const hashes = leaves(size);
    const tree = new MerkleLevels(hashes);
    assert.deepEqual(tree.root(), rootFromLeafHashes(hashes), `root of ${size}`);
    for (let index = 0; index < size; index++) {
      const proof = tree.inclusionProof(index);
      assert.deepEqual(proof, inclusionProof(hashes, index), `proof of ${index} in ${size}`);
      verifyInclusion(BigInt(index), BigInt(size), hashes[index] as Buffer, proof, tree.root());
    }
  }
});

test('AUD-4: MerkleLevels refuses an index outside the tree', () => {
  const tree = new MerkleLevels(leaves(5));
  for (const index of [-1, 5, 1.5]) assert.throws(() => tree.inclusionProof(index), /not in a tree of 5/);
});
