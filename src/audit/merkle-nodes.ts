import { AuditError } from './errors.ts';
import { nodeHash } from './merkle.ts';

// An RFC 6962 tree stored as its perfect subtrees, the way the checkpoint log
// keeps it in `enclave.checkpoint_nodes` (src/db/migrations/0012_checkpoint_nodes.sql)
// and serves it as C2SP tlog tiles. Node (level, index) is the MTH of leaves
// [index · 2^level, (index + 1) · 2^level); it is written once, when its last
// leaf arrives. Every range a root or proof needs (merkle.ts's
// inclusionRanges, consistencyRanges) starts at a multiple of a power of two at
// least its length, so it is a few perfect subtrees side by side, and its MTH
// folds them from the right: O(log n) stored hashes, however large the tree.

export interface TreeNode {
  readonly level: number;
  readonly index: number;
}

/** The perfect subtrees covering leaves [start, end), left to right, each as large as its alignment allows. */
export function perfectSubtrees(start: number, end: number): TreeNode[] {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end <= start) {
    throw new AuditError('merkle_size_invalid', `no leaves in [${start}, ${end})`);
  }
  const nodes: TreeNode[] = [];
  let at = start;
  while (at < end) {
    let level = 0;
    // Grow while the next size up is still aligned at `at` and fits before `end`.
    while ((at / 2 ** (level + 1)) % 1 === 0 && at + 2 ** (level + 1) <= end) level++;
    nodes.push({ level, index: at / 2 ** level });
    at += 2 ** level;
  }
  return nodes;
}

/** The MTH of leaves [start, end), from the hashes of its perfect subtrees. */
export function rangeRoot(start: number, end: number, hashOf: (node: TreeNode) => Uint8Array): Buffer {
  const nodes = perfectSubtrees(start, end);
  let root: Buffer = Buffer.from(hashOf(nodes[nodes.length - 1] as TreeNode));
  for (let i = nodes.length - 2; i >= 0; i--) root = nodeHash(hashOf(nodes[i] as TreeNode), root);
  return root;
}

/** A key for a node in a Map. */
export function nodeKey(node: TreeNode): string {
  return `${node.level}/${node.index}`;
}
