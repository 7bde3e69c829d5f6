import { createHash } from 'node:crypto';
import { readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import type { Sql } from 'postgres';
import { serviceQuery } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { formatEventLine, type SegmentManifest } from './bundle-format.ts';
import { readIfExists, writeOnce } from './write-once.ts';

// Retention (AUD-7). Daily: for each tenant, events older than the hot window
// are written to cold archive segments — gzip files of bundle event lines
// under <archive dir>/<tenant>/, write-once, each with a manifest beside it —
// and removed from the database in two phases, so no crash and no lost file
// can lose an event:
//   1. the file is written and fsynced, then enclave.audit_archive_record()
//      recomputes its digest from the rows, refuses anything inside the
//      window, and records it (the segment is now pending);
//   2. the file is read back, and enclave.audit_archive_delete_rows(), given
//      the digest read, deletes the rows of a segment recorded with that
//      digest by a committed transaction, and appends audit.archived.
// A run first finishes every pending segment an earlier run left. Segments
// whose newest event is past the cold window are then deleted:
// enclave.audit_archive_expire() marks them and appends audit.archive_deleted,
// and their files are removed. The manifests stay, so a verifier can still
// link the chain across what is gone.

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

/** At most this many events per segment file (a segment is read into memory to be written). */
export const SEGMENT_EVENTS = 50_000;
export const ARCHIVE_REASON = 'archive audit events older than the hot window (AUD-7)';

export interface RetentionDeps {
  readonly sql: Sql;
  readonly archiveDir: string;
  readonly hotDays: number;
  readonly coldMonths: number;
  readonly logger: Pick<Logger, 'info' | 'error'>;
}

export interface ArchivedSegment {
  readonly tenantId: string;
  readonly firstSeq: number;
  readonly lastSeq: number;
  /** The seq of the audit.archived event that records the move. */
  readonly recordedAt: number;
}

export interface RetentionResult {
  readonly archived: readonly ArchivedSegment[];
  /** Segments deleted past the cold window by this run. */
  readonly deleted: number;
  /** Tenants whose archiving stopped on an error (logged); their rows stay until a run succeeds. */
  readonly failedTenants: readonly string[];
}

/** `segment-<first>-<last>.jsonl.gz`, seqs zero-padded to 16 digits so names sort in seq order. */
export function segmentFileName(firstSeq: number, lastSeq: number): string {
  const pad = (seq: number) => String(seq).padStart(16, '0');
  return `segment-${pad(firstSeq)}-${pad(lastSeq)}.jsonl.gz`;
}

export function manifestFileName(segmentFile: string): string {
  return segmentFile.replace(/\.jsonl\.gz$/, '.manifest.json');
}

export type RetentionErrorCode = 'archive_segment_unreadable' | 'retention_incomplete';

export function createRetentionService(deps: RetentionDeps) {
  const { sql, archiveDir, hotDays, coldMonths, logger } = deps;
  const segmentPath = (tenantId: string, firstSeq: number, lastSeq: number) =>
    path.join(archiveDir, tenantId, segmentFileName(firstSeq, lastSeq));

  /** Writes (or finds, from an earlier run) the segment file and its manifest; returns the events' digest. */
  async function writeSegmentFiles(tenantId: string, firstSeq: number, lastSeq: number): Promise<Buffer> {
    const rows = await serviceQuery(
      sql,
      { tenantId, reason: ARCHIVE_REASON },
      (tx) => tx<{ hash: Buffer; prev_hash: Buffer; canonical: string; occurred_at: Date }[]>`
        select hash, prev_hash, canonical, occurred_at from audit_events
        where tenant_id = ${tenantId}::uuid and seq between ${firstSeq}::bigint and ${lastSeq}::bigint
        order by seq`,
    );
    const first = rows[0];
    const last = rows.at(-1);
    if (first === undefined || last === undefined || rows.length !== lastSeq - firstSeq + 1) {
      throw new Error(`audit events ${firstSeq}–${lastSeq} of tenant ${tenantId} are not all present`);
    }
    const text = rows.map((row) => `${formatEventLine(row.hash, row.prev_hash, row.canonical)}\n`).join('');
    const bytes = Buffer.from(text, 'utf8');
    const digest = createHash('sha256').update(bytes).digest();
    const file = segmentFileName(firstSeq, lastSeq);
    const manifest: SegmentManifest = {
      tenant: tenantId,
      first_seq: firstSeq,
      last_seq: lastSeq,
      event_count: rows.length,
      first_prev_hash: first.prev_hash.toString('hex'),
      last_hash: last.hash.toString('hex'),
      sha256: digest.toString('hex'),
      first_ts: first.occurred_at.toISOString(),
      last_ts: last.occurred_at.toISOString(),
      file,
    };
    const segment = segmentPath(tenantId, firstSeq, lastSeq);
    // A retried run finds its own earlier file: the same events, whatever gzip made of them.
    const sameEvents = async (existing: Buffer) => (await readDigest(existing, segment)).equals(digest);
    await writeOnce(segment, await gzipAsync(bytes), { same: sameEvents });
    await writeOnce(
      path.join(archiveDir, tenantId, manifestFileName(file)),
      Buffer.from(`${JSON.stringify(manifest)}\n`),
    );
    return digest;
  }

  /** Phase 2: the file as it is on disk now is what vouches for the rows about to go. */
  async function deleteRows(tenantId: string, firstSeq: number, lastSeq: number): Promise<ArchivedSegment> {
    const file = segmentPath(tenantId, firstSeq, lastSeq);
    const digest = await readDigest(await readFile(file), file);
    const [recorded] = await sql<{ seq: string }[]>`
      select enclave.audit_archive_delete_rows(${tenantId}::uuid, ${firstSeq}::bigint, ${digest})::text as seq`;
    return { tenantId, firstSeq, lastSeq, recordedAt: Number(recorded?.seq) };
  }

  async function archiveSegment(tenantId: string, firstSeq: number, lastSeq: number) {
    const digest = await writeSegmentFiles(tenantId, firstSeq, lastSeq);
    await sql`
      select enclave.audit_archive_record(${tenantId}::uuid, ${firstSeq}::bigint, ${lastSeq}::bigint,
                                          ${digest}, ${hotDays}::int)`;
    return deleteRows(tenantId, firstSeq, lastSeq);
  }

  /** A segment an earlier run recorded but whose rows it did not delete (it crashed, or its file went missing). */
  async function finishPending(tenantId: string, firstSeq: number, lastSeq: number) {
    // Its rows are still in the database, so a lost file is written again from them.
    if ((await readIfExists(segmentPath(tenantId, firstSeq, lastSeq))) === undefined) {
      await writeSegmentFiles(tenantId, firstSeq, lastSeq);
    }
    return deleteRows(tenantId, firstSeq, lastSeq);
  }

  async function runRetention(): Promise<RetentionResult> {
    const candidates = await sql<
      {
        archive_tenant: string;
        archive_first_seq: string;
        archive_last_seq: string;
        archive_sha256: Buffer | null;
      }[]
    >`
      select archive_tenant, archive_first_seq::text, archive_last_seq::text, archive_sha256
      from enclave.audit_archive_candidates(${hotDays}::int)`;
    const archived: ArchivedSegment[] = [];
    // One tenant's failure (an unreadable file, a refused digest) stops that tenant only.
    const failed = new Set<string>();
    for (const candidate of candidates) {
      const tenantId = candidate.archive_tenant;
      if (failed.has(tenantId)) continue;
      const [first, last] = [Number(candidate.archive_first_seq), Number(candidate.archive_last_seq)];
      try {
        if (candidate.archive_sha256 !== null) {
          archived.push(await finishPending(tenantId, first, last));
          continue;
        }
        for (let from = first; from <= last; from += SEGMENT_EVENTS) {
          archived.push(await archiveSegment(tenantId, from, Math.min(last, from + SEGMENT_EVENTS - 1)));
        }
      } catch (error) {
        failed.add(tenantId);
        logger.error(
          { tenantId, code: (error as { code?: unknown }).code, message: (error as Error).message },
          'audit retention stopped for a tenant; its events stay in the database',
        );
      }
    }
    const expired = await sql<{ expired_tenant: string; expired_file: string }[]>`
      select expired_tenant, expired_file from enclave.audit_archive_expire(${coldMonths}::int)`;
    let deleted = 0;
    for (const segment of expired) {
      try {
        await unlink(path.join(archiveDir, segment.expired_tenant, segment.expired_file));
        deleted++;
      } catch (error) {
        // Already removed by an earlier run; the manifest file stays on purpose.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    if (archived.length > 0 || deleted > 0) {
      logger.info({ archivedSegments: archived.length, deletedSegments: deleted }, 'audit retention ran');
    }
    return { archived, deleted, failedTenants: [...failed] };
  }

  return { runRetention };
}

/** SHA-256 of a segment file's uncompressed bytes. */
export async function readDigest(gz: Buffer, file: string): Promise<Buffer> {
  try {
    return createHash('sha256')
      .update(await gunzipAsync(gz))
      .digest();
  } catch (error) {
    throw new AppError('archive_segment_unreadable', `${file} is not a readable gzip file`, { cause: error });
  }
}

export type RetentionService = ReturnType<typeof createRetentionService>;
