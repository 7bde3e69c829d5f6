import type { Sql, TransactionSql } from 'postgres';
import type { Logger } from '../logger.ts';
import type { AuditSigning } from './checkpoint-signing.ts';
import { headMapExtension } from './leaf.ts';
import { consistencyRanges, inclusionRanges, type LeafRange } from './merkle.ts';
import { nodeKey, perfectSubtrees, rangeRoot, type TreeNode } from './merkle-nodes.ts';
import { formatCheckpoint, signNote, verifyCheckpoint } from './note.ts';
import type { CheckpointPublisher } from './publisher.ts';

// The checkpoint log (AUD-4, AUD-8). Each run appends a leaf for every tenant
// whose chain head moved (enclave.checkpoint_append_leaves, which builds the
// leaves from the heads themselves and stores the subtree hashes they
// complete), has the database compute the RFC 6962 root, signs a C2SP
// checkpoint note and records it (checkpoint_record recomputes the root and
// refuses another) — all in one transaction under the log's advisory lock —
// then publishes it to write-once storage.
//
// Scale: the tree is stored as its perfect subtrees (merkle-nodes.ts), so a
// root or a proof reads O(log n) stored hashes and appending k leaves hashes
// O(k) nodes, in the database, never on this process's event loop.

type Db = Sql | TransactionSql;

export interface CheckpointRecord {
  readonly size: bigint;
  readonly root: Buffer;
  readonly note: string;
}

export interface TenantLeaf {
  readonly index: bigint;
  readonly tenant: string;
  readonly seq: number;
  readonly hash: Buffer;
}

export interface MadeCheckpoint {
  readonly checkpoint: CheckpointRecord;
  /** False when no head moved since the latest checkpoint, which is returned instead. */
  readonly created: boolean;
  readonly leavesAppended: number;
  /** Checkpoints written to the publisher by this run (a failed earlier publish is caught up). */
  readonly published: number;
  /** Sizes of recorded checkpoints whose notes do not verify with this server's key, which were not published. */
  readonly refused: readonly bigint[];
}

export async function latestCheckpoint(sql: Db): Promise<CheckpointRecord | undefined> {
  const [row] = await sql<{ size: string; root: Buffer; note: string }[]>`
    select c.size::text, c.root, c.note from checkpoints c order by c.size desc limit 1`;
  return row === undefined ? undefined : { size: BigInt(row.size), root: row.root, note: row.note };
}

export async function checkpointOfSize(sql: Db, size: bigint): Promise<CheckpointRecord | undefined> {
  const [row] = await sql<{ root: Buffer; note: string }[]>`
    select root, note from checkpoints where size = ${size.toString()}::bigint`;
  return row === undefined ? undefined : { size, root: row.root, note: row.note };
}

/** The MTH of each list of leaf ranges (one proof per list), from the stored subtrees, in one query. */
export async function proofsFromNodes(
  sql: Db,
  proofs: readonly (readonly LeafRange[])[],
): Promise<Buffer[][]> {
  const needed = new Map<string, TreeNode>();
  for (const ranges of proofs) {
    for (const [start, end] of ranges)
      for (const node of perfectSubtrees(start, end)) needed.set(nodeKey(node), node);
  }
  if (needed.size === 0) return proofs.map(() => []);
  const nodes = [...needed.values()];
  const rows = await sql<{ level: number; idx: string; hash: Buffer }[]>`
    select n.level, n.idx::text, n.hash from checkpoint_nodes n
    join unnest(${nodes.map((node) => node.level)}::smallint[], ${nodes.map((node) => String(node.index))}::bigint[])
      as wanted(level, idx) on n.level = wanted.level and n.idx = wanted.idx`;
  const hashes = new Map(rows.map((row) => [`${row.level}/${row.idx}`, row.hash]));
  const hashOf = (node: TreeNode): Buffer => {
    const hash = hashes.get(nodeKey(node));
    if (hash === undefined) throw new Error(`the checkpoint log has no subtree ${nodeKey(node)}`);
    return hash;
  };
  return proofs.map((ranges) => ranges.map(([start, end]) => rangeRoot(start, end, hashOf)));
}

/** The consistency proof from `oldSize` to `newSize` (both sizes of the stored log). */
export async function loadConsistencyProof(sql: Db, oldSize: bigint, newSize: bigint): Promise<Buffer[]> {
  if (oldSize === newSize) return [];
  const [proof = []] = await proofsFromNodes(sql, [consistencyRanges(Number(newSize), Number(oldSize))]);
  return proof;
}

/** The tenant's leaves among the first `size` leaves, in index order. */
export async function tenantLeaves(sql: Db, tenantId: string, size: bigint): Promise<TenantLeaf[]> {
  const rows = await sql<{ idx: string; seq: string; head_hash: Buffer }[]>`
    select l.idx::text, l.seq::text, l.head_hash from checkpoint_leaves l
    where l.tenant_id = ${tenantId}::uuid and l.idx < ${size.toString()}::bigint
    order by l.idx`;
  return rows.map((row) => ({
    index: BigInt(row.idx),
    tenant: tenantId,
    seq: Number(row.seq),
    hash: row.head_hash,
  }));
}

/** The tenant's newest leaf among the first `size` leaves: how far the checkpoint commits its chain. */
export async function latestTenantLeaf(
  sql: Db,
  tenantId: string,
  size: bigint,
): Promise<TenantLeaf | undefined> {
  // The tenant's newest leaf of all (its head map entry) answers by primary key when the
  // checkpoint covers it, as the latest one does; only an older checkpoint searches the leaves.
  const [row] = await sql<{ idx: string; seq: string; head_hash: Buffer }[]>`
    select h.idx::text, h.seq::text, h.head_hash from checkpoint_tenant_heads h
    where h.tenant_id = ${tenantId}::uuid and h.idx < ${size.toString()}::bigint
    union all
    (select l.idx::text, l.seq::text, l.head_hash from checkpoint_leaves l
     where l.tenant_id = ${tenantId}::uuid and l.idx < ${size.toString()}::bigint
       and not exists (select 1 from checkpoint_tenant_heads h
                       where h.tenant_id = ${tenantId}::uuid and h.idx < ${size.toString()}::bigint)
     order by l.idx desc limit 1)`;
  return row === undefined
    ? undefined
    : { index: BigInt(row.idx), tenant: tenantId, seq: Number(row.seq), hash: row.head_hash };
}

export interface ProvenLeaf extends TenantLeaf {
  readonly inclusion: readonly Buffer[];
}

export interface TenantProof {
  readonly checkpoint: CheckpointRecord | undefined;
  /** Every leaf of the tenant in the checkpoint, in index order, each with its inclusion proof. */
  readonly leaves: readonly ProvenLeaf[];
  /** Consistency proofs from each requested earlier size to the checkpoint. */
  readonly consistency: readonly { readonly oldSize: bigint; readonly proof: readonly Buffer[] }[];
}

/**
 * The tenant's leaves in `checkpoint` (default: the latest) with their
 * inclusion proofs — the newest is its head's — and consistency proofs from
 * each of `fromSizes` that is a smaller non-empty tree.
 */
export async function loadTenantProof(
  sql: Db,
  tenantId: string,
  options: { checkpoint?: CheckpointRecord; fromSizes?: readonly bigint[]; newestOnly?: boolean } = {},
): Promise<TenantProof> {
  const checkpoint = options.checkpoint ?? (await latestCheckpoint(sql));
  if (checkpoint === undefined) return { checkpoint, leaves: [], consistency: [] };
  let leaves: TenantLeaf[];
  if (options.newestOnly === true) {
    const newest = await latestTenantLeaf(sql, tenantId, checkpoint.size);
    leaves = newest === undefined ? [] : [newest];
  } else {
    leaves = await tenantLeaves(sql, tenantId, checkpoint.size);
  }
  const size = Number(checkpoint.size);
  const fromSizes = [...new Set(options.fromSizes ?? [])].filter((s) => s > 0n && s < checkpoint.size);
  const proofs = await proofsFromNodes(sql, [
    ...leaves.map((leaf) => inclusionRanges(size, Number(leaf.index))),
    ...fromSizes.map((oldSize) => consistencyRanges(size, Number(oldSize))),
  ]);
  return {
    checkpoint,
    leaves: leaves.map((leaf, i) => ({ ...leaf, inclusion: proofs[i] ?? [] })),
    consistency: fromSizes.map((oldSize, i) => ({ oldSize, proof: proofs[leaves.length + i] ?? [] })),
  };
}

/** The size of the checkpoint before `size`, if any. */
export async function previousCheckpointSize(sql: Db, size: bigint): Promise<bigint | undefined> {
  const [row] = await sql<{ size: string }[]>`
    select c.size::text from checkpoints c where c.size < ${size.toString()}::bigint order by c.size desc limit 1`;
  return row === undefined ? undefined : BigInt(row.size);
}

export interface CheckpointServiceDeps {
  readonly sql: Sql;
  readonly signing: Pick<AuditSigning, 'origin' | 'signer' | 'verifierKey'>;
  readonly publisher: Pick<CheckpointPublisher, 'publish'>;
  readonly logger: Pick<Logger, 'info' | 'error'>;
}

export function createCheckpointService(deps: CheckpointServiceDeps) {
  const { sql, signing, publisher, logger } = deps;

  /**
   * Whether a recorded checkpoint is one this server signed: its note verifies
   * with the checkpoint key, for this origin, and carries the recorded size and
   * root. Anything else in the table was recorded by someone else with database
   * access (AUD-4), and must go nowhere.
   */
  function isOwnCheckpoint(size: bigint, root: Buffer, note: string): boolean {
    try {
      const checkpoint = verifyCheckpoint(note, signing.verifierKey, signing.origin);
      return checkpoint.size === size && checkpoint.root.equals(root);
    } catch {
      return false;
    }
  }

  /** Publishes the newest checkpoints down to the first one already published; refuses those it did not sign. */
  async function publishPending(): Promise<{ published: number; refused: bigint[] }> {
    let published = 0;
    const refused: bigint[] = [];
    let below: bigint | undefined;
    for (;;) {
      const rows = await sql<{ size: string; root: Buffer; note: string }[]>`
        select c.size::text, c.root, c.note from checkpoints c
        where ${below === undefined} or c.size < ${(below ?? 0n).toString()}::bigint
        order by c.size desc limit 100`;
      for (const row of rows) {
        const size = BigInt(row.size);
        if (!isOwnCheckpoint(size, row.root, row.note)) {
          logger.error(
            { size: row.size },
            'a recorded audit checkpoint does not verify with the checkpoint key; it is not published (possible tampering)',
          );
          refused.push(size);
          continue;
        }
        if ((await publisher.publish(size, row.note)) === 'exists') return { published, refused };
        published++;
      }
      if (rows.length < 100) return { published, refused };
      below = BigInt(rows.at(-1)?.size ?? '0');
    }
  }

  async function makeCheckpoint(): Promise<MadeCheckpoint> {
    const made = await sql.begin(async (tx) => {
      const appended = await tx<
        { leaf_index: string; leaf_tenant: string; leaf_seq: string; previous_seq: string | null }[]
      >`
        select leaf_index::text, leaf_tenant, leaf_seq::text, previous_seq::text from enclave.checkpoint_append_leaves()`;
      for (const leaf of appended) {
        if (leaf.previous_seq !== null && BigInt(leaf.previous_seq) >= BigInt(leaf.leaf_seq)) {
          // A head at or below a seq already committed to: the chain was cut back or rewritten.
          logger.error(
            {
              tenantId: leaf.leaf_tenant,
              seq: leaf.leaf_seq,
              previousSeq: leaf.previous_seq,
              leaf: leaf.leaf_index,
            },
            'audit chain head went backwards or was rewritten since the last checkpoint (possible tampering)',
          );
        }
      }
      const [count] = await tx<{ size: string }[]>`
        select coalesce(max(idx) + 1, 0)::text as size from checkpoint_leaves`;
      const size = BigInt(count?.size ?? '0');
      const latest = await latestCheckpoint(tx);
      if (latest !== undefined && latest.size === size) {
        return { checkpoint: latest, created: false, leavesAppended: appended.length };
      }
      const [computed] = await tx<
        { root: Buffer }[]
      >`select enclave.checkpoint_root(${size.toString()}::bigint) as root`;
      if (computed === undefined) throw new Error('checkpoint_root returned no row');
      const { root } = computed;
      // The head map as it stands after this run's leaves: every tenant's newest leaf (AUD-8).
      const [map] = await tx<{ map_size: string; map_root: Buffer }[]>`
        select map_size::text, map_root from enclave.checkpoint_head_map(null)`;
      if (map === undefined) throw new Error('checkpoint_head_map returned no row');
      const extensions = [headMapExtension(BigInt(map.map_size), map.map_root)];
      const note = signNote(
        formatCheckpoint({ origin: signing.origin, size, root, extensions }),
        signing.signer,
      );
      await tx`select enclave.checkpoint_record(${size.toString()}::bigint, ${root}, ${note})`;
      return { checkpoint: { size, root, note }, created: true, leavesAppended: appended.length };
    });
    const { published, refused } = await publishPending();
    if (made.created) {
      logger.info(
        { size: made.checkpoint.size.toString(), leavesAppended: made.leavesAppended, published },
        'audit checkpoint signed',
      );
    }
    return { ...made, published, refused };
  }

  return { makeCheckpoint };
}

export type CheckpointService = ReturnType<typeof createCheckpointService>;
