import type { Sql, TransactionSql } from 'postgres';
import type { Logger } from '../logger.ts';
import type { AuditSigning } from './checkpoint-signing.ts';
import { consistencyProof, rootFromLeafHashes } from './merkle.ts';
import { MerkleLevels } from './merkle-levels.ts';
import { formatCheckpoint, signNote } from './note.ts';
import type { CheckpointPublisher } from './publisher.ts';

// The checkpoint log (AUD-4, AUD-8). Each run appends a leaf for every tenant
// whose chain head moved (enclave.checkpoint_append_leaves, which builds the
// leaves from the heads themselves), computes the RFC 6962 root over all
// leaves, signs a C2SP checkpoint note and records it — all in one
// transaction under the log's advisory lock — then publishes it to
// write-once storage. Proofs are computed from the stored leaf hashes.
//
// Scale: the root and each proof are computed from every leaf hash in
// memory, O(leaves) per call; one leaf per moving tenant per interval keeps
// that to millions of hashes after years. Storing subtree hashes (tiles)
// would make it O(log n) if that ever matters.

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

/** Leaf hashes 0 … size − 1, in order. */
export async function loadLeafHashes(sql: Db, size: bigint): Promise<Buffer[]> {
  const rows = await sql<{ leaf_hash: Buffer }[]>`
    select leaf_hash from checkpoint_leaves where idx < ${size.toString()}::bigint order by idx`;
  if (BigInt(rows.length) !== size)
    throw new Error(`the checkpoint log has ${rows.length} of ${size} leaves`);
  return rows.map((row) => row.leaf_hash);
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
  const [row] = await sql<{ idx: string; seq: string; head_hash: Buffer }[]>`
    select l.idx::text, l.seq::text, l.head_hash from checkpoint_leaves l
    where l.tenant_id = ${tenantId}::uuid and l.idx < ${size.toString()}::bigint
    order by l.idx desc limit 1`;
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
  options: { checkpoint?: CheckpointRecord; fromSizes?: readonly bigint[] } = {},
): Promise<TenantProof> {
  const checkpoint = options.checkpoint ?? (await latestCheckpoint(sql));
  if (checkpoint === undefined) return { checkpoint, leaves: [], consistency: [] };
  const leaves = await tenantLeaves(sql, tenantId, checkpoint.size);
  const fromSizes = [...new Set(options.fromSizes ?? [])].filter((s) => s > 0n && s < checkpoint.size);
  if (leaves.length === 0 && fromSizes.length === 0) return { checkpoint, leaves: [], consistency: [] };
  const hashes = await loadLeafHashes(sql, checkpoint.size);
  const tree = new MerkleLevels(hashes);
  return {
    checkpoint,
    leaves: leaves.map((leaf) => ({ ...leaf, inclusion: tree.inclusionProof(Number(leaf.index)) })),
    consistency: fromSizes.map((oldSize) => ({ oldSize, proof: consistencyProof(hashes, Number(oldSize)) })),
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
  readonly signing: Pick<AuditSigning, 'origin' | 'signer'>;
  readonly publisher: Pick<CheckpointPublisher, 'publish'>;
  readonly logger: Pick<Logger, 'info' | 'error'>;
}

export function createCheckpointService(deps: CheckpointServiceDeps) {
  const { sql, signing, publisher, logger } = deps;

  /** Publishes the newest checkpoints down to the first one already published. */
  async function publishPending(): Promise<number> {
    let published = 0;
    let below: bigint | undefined;
    for (;;) {
      const rows = await sql<{ size: string; note: string }[]>`
        select c.size::text, c.note from checkpoints c
        where ${below === undefined} or c.size < ${(below ?? 0n).toString()}::bigint
        order by c.size desc limit 100`;
      for (const row of rows) {
        if ((await publisher.publish(BigInt(row.size), row.note)) === 'exists') return published;
        published++;
      }
      if (rows.length < 100) return published;
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
      const [count] = await tx<{ size: string }[]>`select count(*)::text as size from checkpoint_leaves`;
      const size = BigInt(count?.size ?? '0');
      const latest = await latestCheckpoint(tx);
      if (latest !== undefined && latest.size === size) {
        return { checkpoint: latest, created: false, leavesAppended: appended.length };
      }
      const root = rootFromLeafHashes(await loadLeafHashes(tx, size));
      const note = signNote(formatCheckpoint({ origin: signing.origin, size, root }), signing.signer);
      await tx`select enclave.checkpoint_record(${size.toString()}::bigint, ${root}, ${note})`;
      return { checkpoint: { size, root, note }, created: true, leavesAppended: appended.length };
    });
    const published = await publishPending();
    if (made.created) {
      logger.info(
        { size: made.checkpoint.size.toString(), leavesAppended: made.leavesAppended, published },
        'audit checkpoint signed',
      );
    }
    return { ...made, published };
  }

  return { makeCheckpoint };
}

export type CheckpointService = ReturnType<typeof createCheckpointService>;
