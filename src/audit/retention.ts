import { createHash } from 'node:crypto';
import { unlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import type { Sql } from 'postgres';
import { serviceQuery } from '../db/tenant.ts';
import type { Logger } from '../logger.ts';
import { formatEventLine, type SegmentManifest } from './bundle-format.ts';
import { writeOnce } from './write-once.ts';

// Retention (AUD-7). Daily: for each tenant, events older than the hot window
// are written to cold archive segments — gzip files of bundle event lines
// under <archive dir>/<tenant>/, write-once, each with a manifest beside it —
// and only then removed from the database by enclave.audit_archive_segment(),
// which re-derives the segment's digest from the rows, refuses anything inside
// the window, and appends audit.archived to the tenant's chain. Segments whose
// newest event is past the cold window are then deleted:
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
  readonly logger: Pick<Logger, 'info'>;
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
}

/** `segment-<first>-<last>.jsonl.gz`, seqs zero-padded to 16 digits so names sort in seq order. */
export function segmentFileName(firstSeq: number, lastSeq: number): string {
  const pad = (seq: number) => String(seq).padStart(16, '0');
  return `segment-${pad(firstSeq)}-${pad(lastSeq)}.jsonl.gz`;
}

export function manifestFileName(segmentFile: string): string {
  return segmentFile.replace(/\.jsonl\.gz$/, '.manifest.json');
}

export function createRetentionService(deps: RetentionDeps) {
  const { sql, archiveDir, hotDays, coldMonths, logger } = deps;

  async function archiveSegment(
    tenantId: string,
    firstSeq: number,
    lastSeq: number,
  ): Promise<ArchivedSegment> {
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
    const dir = path.join(archiveDir, tenantId);
    // A retried run finds its own earlier file: the same events, whatever gzip made of them.
    const sameEvents = async (existing: Buffer) =>
      createHash('sha256')
        .update(await gunzipAsync(existing))
        .digest()
        .equals(digest);
    await writeOnce(path.join(dir, file), await gzipAsync(bytes), { same: sameEvents });
    await writeOnce(path.join(dir, manifestFileName(file)), Buffer.from(`${JSON.stringify(manifest)}\n`));
    const [recorded] = await sql<{ seq: string }[]>`
      select enclave.audit_archive_segment(${tenantId}::uuid, ${firstSeq}::bigint, ${lastSeq}::bigint,
                                           ${digest}, ${hotDays}::int)::text as seq`;
    return { tenantId, firstSeq, lastSeq, recordedAt: Number(recorded?.seq) };
  }

  async function runRetention(): Promise<RetentionResult> {
    const candidates = await sql<
      { archive_tenant: string; archive_first_seq: string; archive_last_seq: string }[]
    >`
      select archive_tenant, archive_first_seq::text, archive_last_seq::text
      from enclave.audit_archive_candidates(${hotDays}::int)`;
    const archived: ArchivedSegment[] = [];
    for (const candidate of candidates) {
      const last = Number(candidate.archive_last_seq);
      for (let first = Number(candidate.archive_first_seq); first <= last; first += SEGMENT_EVENTS) {
        archived.push(
          await archiveSegment(candidate.archive_tenant, first, Math.min(last, first + SEGMENT_EVENTS - 1)),
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
    return { archived, deleted };
  }

  return { runRetention };
}

export type RetentionService = ReturnType<typeof createRetentionService>;
