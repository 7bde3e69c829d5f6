import type { Sql } from 'postgres';
import { ChainVerifier } from '../audit/chain.ts';
import { latestCheckpoint, loadTenantProof, proofsFromNodes } from '../audit/checkpoint-log.ts';
import type { AuditSigning } from '../audit/checkpoint-signing.ts';
import { GENESIS_HASH } from '../audit/event.ts';
import { headLeafHash } from '../audit/leaf.ts';
import { consistencyRanges, verifyConsistency, verifyInclusion } from '../audit/merkle.ts';
import { verifyCheckpoint } from '../audit/note.ts';
import { serviceQuery } from '../db/tenant.ts';
import type { CheckOutcome } from './runs.ts';

// Chain integrity (OPS-5): the live database checked as the offline verifier
// checks an export (AUD-5, AUD-4, AUD-8), with the same pure code. Every
// signed checkpoint must verify with the checkpoint key and be consistent
// with the one before it (each run checks those recorded since the last
// passing run's newest, its anchor, which must be unchanged; and re-checks the
// older ones in turn, RECHECK a run, so a row rewritten after its first check
// is found within a bounded number of runs); every tenant's chain is re-hashed from its first
// hot event (linked to its last archive segment) by ChainVerifier, read
// through serviceQuery in pages of a cursor, so memory stays bounded whatever
// the chain's length; and the chain must pass through the head its newest
// checkpoint leaf commits to, which must be included in the latest checkpoint.

export const CHAIN_CHECK_REASON = 'posture: re-verify the audit chain (OPS-5)';
/** Rows fetched per cursor page, and checkpoints per consistency batch. */
const PAGE = 500;
/** Checkpoints older than the anchor whose signed note each run checks again, in size order, wrapping round. */
const RECHECK = 500;

export interface ChainIntegrityDeps {
  readonly sql: Sql;
  readonly signing: Pick<AuditSigning, 'origin' | 'verifierKey'>;
}

interface Failure {
  readonly tenant: string | null;
  readonly seq: number | null;
  readonly reason: string;
}

interface Head {
  readonly size: bigint;
  readonly root: Buffer;
}

/**
 * The newest checkpoint the last passing run verified, and where its re-check
 * of older ones stopped. Each run verifies the checkpoints recorded after the
 * anchor, the first linked to it by a consistency proof, so every checkpoint
 * is checked once however long the log grows, and the anchor itself must
 * still be the row that was verified.
 */
async function verifiedAnchor(sql: Sql): Promise<{ anchor: Head | undefined; recheckedTo: bigint }> {
  const [row] = await sql<{ size: string | null; root: string | null; rechecked_to: string | null }[]>`
    select details -> 'anchor' ->> 'size' as size, details -> 'anchor' ->> 'root' as root,
           details -> 'rechecked' ->> 'to' as rechecked_to
    from posture_runs where check_name = 'chain_integrity' and result = 'pass'
    order by finished_at desc limit 1`;
  const recheckedTo = BigInt(row?.rechecked_to ?? 0);
  if (row?.size == null || row.root == null) return { anchor: undefined, recheckedTo };
  return { anchor: { size: BigInt(row.size), root: Buffer.from(row.root, 'hex') }, recheckedTo };
}

/**
 * Checks again the signed notes of up to RECHECK checkpoints older than the
 * anchor, after `from` (where the last passing run stopped), starting over
 * from the first once it reaches the anchor. A stored root no longer matching
 * a note signed by our key is found; a row deleted outright is not (sizes
 * are not consecutive), nor is a change between re-checks before its turn.
 */
async function recheckOlderCheckpoints(
  deps: ChainIntegrityDeps,
  anchor: Head | undefined,
  from: bigint,
): Promise<{ count: number; to: bigint; failure: Failure | undefined }> {
  if (anchor === undefined) return { count: 0, to: 0n, failure: undefined };
  const start = from < anchor.size ? from : 0n;
  const rows = await deps.sql<{ size: string; root: Buffer; note: string }[]>`
    select c.size::text, c.root, c.note from checkpoints c
    where c.size > ${start.toString()}::bigint and c.size < ${anchor.size.toString()}::bigint
    order by c.size limit ${RECHECK}`;
  for (const row of rows) {
    const failure = verifySignedCheckpoint(deps, BigInt(row.size), row.root, row.note);
    if (failure !== undefined) {
      return { count: 0, to: start, failure: { ...failure, reason: `${failure.reason} (re-checked)` } };
    }
  }
  // Fewer than a full batch: the anchor is reached, and the next run starts over.
  const last = rows.at(-1);
  const to = rows.length < RECHECK || last === undefined ? 0n : BigInt(last.size);
  return { count: rows.length, to, failure: undefined };
}

function verifySignedCheckpoint(
  deps: ChainIntegrityDeps,
  size: bigint,
  root: Buffer,
  note: string,
): Failure | undefined {
  try {
    // Attacker-controlled: the stored note (anyone with database access can write the table).
    const signed = verifyCheckpoint(note, deps.signing.verifierKey, deps.signing.origin);
    if (signed.size !== size || !signed.root.equals(root))
      throw new Error('the note does not carry the recorded size and root');
    return undefined;
  } catch (error) {
    return { tenant: null, seq: null, reason: `checkpoint ${size}: ${(error as Error).message}` };
  }
}

/** The recorded checkpoints after `anchor` (all, without one), in size order: signed by our key, each consistent with the one before. */
async function verifyCheckpointLog(
  deps: ChainIntegrityDeps,
  anchor: Head | undefined,
): Promise<{ count: number; newest: Head | undefined; failure: Failure | undefined }> {
  let previous = anchor;
  if (anchor !== undefined) {
    const [row] = await deps.sql<{ root: Buffer; note: string }[]>`
      select root, note from checkpoints where size = ${anchor.size.toString()}::bigint`;
    const failure =
      row === undefined || !row.root.equals(anchor.root)
        ? {
            tenant: null,
            seq: null,
            reason: `checkpoint ${anchor.size} is gone or changed since a run verified it`,
          }
        : verifySignedCheckpoint(deps, anchor.size, row.root, row.note);
    if (failure !== undefined) return { count: 0, newest: anchor, failure };
  }
  let count = 0;
  for (;;) {
    const rows = await deps.sql<{ size: string; root: Buffer; note: string }[]>`
      select c.size::text, c.root, c.note from checkpoints c
      where c.size > ${(previous?.size ?? -1n).toString()}::bigint order by c.size limit ${PAGE}`;
    const heads: Head[] = [];
    for (const row of rows) {
      const size = BigInt(row.size);
      const failure = verifySignedCheckpoint(deps, size, row.root, row.note);
      if (failure !== undefined) return { count, newest: previous, failure };
      heads.push({ size, root: row.root });
    }
    const pairs = heads.flatMap((head, i) => {
      const before = i === 0 ? previous : heads[i - 1];
      return before === undefined || before.size === 0n ? [] : [[before, head] as const];
    });
    const proofs = await proofsFromNodes(
      deps.sql,
      pairs.map(([before, head]) => consistencyRanges(Number(head.size), Number(before.size))),
    );
    for (const [i, [before, head]] of pairs.entries()) {
      try {
        verifyConsistency(before.size, head.size, before.root, head.root, proofs[i] ?? []);
      } catch (error) {
        const reason = `checkpoint ${head.size} is not consistent with checkpoint ${before.size}: ${(error as Error).message}`;
        return { count, newest: previous, failure: { tenant: null, seq: null, reason } };
      }
    }
    count += heads.length;
    previous = heads.at(-1) ?? previous;
    if (rows.length < PAGE) return { count, newest: previous, failure: undefined };
  }
}

/** One tenant's chain, re-hashed; its head leaf in the latest checkpoint proven and matched. */
async function verifyTenant(
  sql: Sql,
  tenant: string,
  latest: Head | undefined,
): Promise<{ events: number; failure: Failure | undefined }> {
  const proof = latest === undefined ? undefined : await loadTenantProof(sql, tenant, { newestOnly: true });
  const leaf = proof?.leaves[0];
  if (leaf !== undefined && proof?.checkpoint !== undefined) {
    try {
      const { size, root } = proof.checkpoint;
      verifyInclusion(leaf.index, size, headLeafHash(leaf), leaf.inclusion, root);
    } catch (error) {
      return {
        events: 0,
        failure: {
          tenant,
          seq: leaf.seq,
          reason: `the head leaf is not in the latest checkpoint: ${(error as Error).message}`,
        },
      };
    }
  }
  return serviceQuery(sql, { tenantId: tenant, reason: CHAIN_CHECK_REASON }, async (tx) => {
    // The first event still in the database; with none, the one after the archive's last.
    const [first] = await tx<{ seq: string }[]>`
      select coalesce(
        (select seq from audit_events where tenant_id = ${tenant}::uuid order by seq limit 1),
        (select max(last_seq) + 1 from audit_archive_segments where tenant_id = ${tenant}::uuid),
        1)::text as seq`;
    const firstSeq = Number(first?.seq ?? 1);
    let prev: Buffer = Buffer.from(GENESIS_HASH);
    if (firstSeq > 1) {
      // The hot chain starts where the archive ends: its link is the last segment's recorded hash.
      const [segment] = await tx<{ last_hash: Buffer }[]>`
        select last_hash from audit_archive_segments
        where tenant_id = ${tenant}::uuid and last_seq = ${firstSeq - 1}::bigint`;
      if (segment === undefined) {
        const reason = `the events in the database start at seq ${firstSeq}, and no archive segment ends at seq ${firstSeq - 1}`;
        return { events: 0, failure: { tenant, seq: firstSeq, reason } };
      }
      prev = segment.last_hash;
    }
    const verifier = new ChainVerifier({ tenant, expectFirstSeq: firstSeq, expectPrevHash: prev });
    let committedSeen = leaf === undefined || leaf.seq < firstSeq;
    const cursor = tx<{ canonical: string; hash: Buffer }[]>`
      select canonical, hash from audit_events where tenant_id = ${tenant}::uuid order by seq`.cursor(PAGE);
    pages: for await (const rows of cursor) {
      for (const row of rows) {
        const event = verifier.push(row);
        if (event === undefined) break pages;
        if (leaf !== undefined && event.seq === leaf.seq) {
          if (!row.hash.equals(leaf.hash)) {
            const reason = 'the event’s hash is not the head the checkpoint committed to';
            return { events: event.seq - firstSeq, failure: { tenant, seq: event.seq, reason } };
          }
          committedSeen = true;
        }
      }
    }
    const result = verifier.result();
    if (!result.ok)
      return { events: result.count, failure: { tenant, seq: result.seq, reason: result.reason } };
    if (!committedSeen && leaf !== undefined) {
      const reason = `the chain ends at seq ${result.head.seq}, before seq ${leaf.seq} that a checkpoint committed to`;
      return { events: result.count, failure: { tenant, seq: result.head.seq + 1, reason } };
    }
    return { events: result.count, failure: undefined };
  });
}

export async function checkChainIntegrity(deps: ChainIntegrityDeps): Promise<CheckOutcome> {
  const verified = await verifiedAnchor(deps.sql);
  const rechecked = await recheckOlderCheckpoints(deps, verified.anchor, verified.recheckedTo);
  const log = await verifyCheckpointLog(deps, verified.anchor);
  const latest = await latestCheckpoint(deps.sql);
  const tenants = await deps.sql<
    { tenant: string }[]
  >`select enclave.posture_chain_tenants()::text as tenant`;
  let events = 0;
  let failedTenants = 0;
  let firstFailure = rechecked.failure ?? log.failure;
  for (const { tenant } of tenants) {
    const checked = await verifyTenant(deps.sql, tenant, latest);
    events += checked.events;
    if (checked.failure !== undefined) {
      failedTenants++;
      firstFailure ??= checked.failure;
    }
  }
  const figures = {
    tenants: tenants.length,
    events,
    checkpoints: log.count,
    rechecked: { count: rechecked.count, to: rechecked.to.toString() },
    failed_tenants: failedTenants,
    first_failure: firstFailure ?? null,
    anchor:
      log.newest === undefined
        ? null
        : { size: log.newest.size.toString(), root: log.newest.root.toString('hex') },
  };
  if (firstFailure !== undefined) {
    const where =
      firstFailure.tenant === null
        ? 'the checkpoint log'
        : `tenant ${firstFailure.tenant} at seq ${firstFailure.seq}`;
    return {
      result: 'failed',
      details: { summary: `broken in ${where}: ${firstFailure.reason}`, ...figures },
    };
  }
  return {
    result: 'pass',
    details: {
      summary: `${events} events of ${tenants.length} tenants, and ${log.count} new checkpoints, verified; ${rechecked.count} older checkpoints re-checked`,
      ...figures,
    },
  };
}
