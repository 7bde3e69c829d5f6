import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  consistencyProof,
  consistencyRanges,
  inclusionProof,
  inclusionRanges,
  nodeHash,
  rootFromLeafHashes,
} from './merkle.ts';
import { perfectSubtrees, rangeRoot, type TreeNode } from './merkle-nodes.ts';

// The stored tree (perfect subtrees, written once each) must give the same
// roots and proofs as RFC 6962's recursive definition (merkle.ts, which
// passes the shared vectors), for any size.

function leaves(n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => createHash('sha256').update(`leaf ${i}`).digest());
}

/** Every perfect subtree of the leaves, as the database stores them. */
function storedNodes(leafHashes: readonly Buffer[]): Map<string, Buffer> {
  const nodes = new Map<string, Buffer>();
  let level = leafHashes.map((hash, i) => {
    nodes.set(`0/${i}`, hash);
    return hash;
  });
  for (let l = 1; level.length > 1; l++) {
    const parents: Buffer[] = [];
    for (let i = 0; i + 1 < level.length; i += 2) {
      const parent = nodeHash(level[i] as Buffer, level[i + 1] as Buffer);
      nodes.set(`${l}/${i / 2}`, parent);
      parents.push(parent);
    }
    level = parents;
  }
  return nodes;
}

function lookup(nodes: Map<string, Buffer>) {
  return (node: TreeNode): Buffer => {
    const hash = nodes.get(`${node.level}/${node.index}`);
    if (hash === undefined) throw new Error(`no stored node ${node.level}/${node.index}`);
    return hash;
  };
}

describe('the tree stored as perfect subtrees', () => {
  test('AUD-4: perfectSubtrees splits [0, n) at the set bits of n, and an aligned range into aligned nodes', () => {
    assert.deepEqual(perfectSubtrees(0, 13), [
      { level: 3, index: 0 },
      { level: 2, index: 2 },
      { level: 0, index: 12 },
    ]);
    assert.deepEqual(perfectSubtrees(8, 14), [
      { level: 2, index: 2 },
      { level: 1, index: 6 },
    ]);
    assert.throws(() => perfectSubtrees(3, 3), { code: 'merkle_size_invalid' });
  });

  test('AUD-4: roots, inclusion proofs and consistency proofs from stored subtrees equal RFC 6962 (fast-check, sizes up to 10,000)', () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 10_000 })
          .chain((size) =>
            fc.tuple(fc.constant(size), fc.nat({ max: size - 1 }), fc.integer({ min: 1, max: size })),
          ),
        ([size, index, oldSize]) => {
          const hashes = leaves(size);
          const hashOf = lookup(storedNodes(hashes));
          assert.deepEqual(rangeRoot(0, size, hashOf), rootFromLeafHashes(hashes));
          assert.deepEqual(
            inclusionRanges(size, index).map(([start, end]) => rangeRoot(start, end, hashOf)),
            inclusionProof(hashes, index),
          );
          assert.deepEqual(
            consistencyRanges(size, oldSize).map(([start, end]) => rangeRoot(start, end, hashOf)),
            consistencyProof(hashes, oldSize),
          );
        },
      ),
      { numRuns: 25, seed: 21 },
    );
  });

  test('AUD-4: a proof in a tree of a million leaves reads O(log n) stored hashes', () => {
    const size = 1_000_003;
    const read = new Set<string>();
    const count = (node: TreeNode) => {
      read.add(`${node.level}/${node.index}`);
      return Buffer.alloc(32);
    };
    for (const [start, end] of inclusionRanges(size, 777_777)) rangeRoot(start, end, count);
    for (const [start, end] of consistencyRanges(size, 500_001)) rangeRoot(start, end, count);
    rangeRoot(0, size, count);
    assert.ok(read.size <= 3 * 21, `read ${read.size} hashes`);
  });
});
