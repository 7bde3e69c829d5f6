import path from 'node:path';
import type { Sql } from 'postgres';
import { readDigest } from '../audit/retention.ts';
import { readIfExists } from '../audit/write-once.ts';
import type { CheckOutcome } from './runs.ts';

// Retention SLO (OPS-5, AUD-7): no event stays in the database past the hot
// window (the daily archiving job is given RETENTION_GRACE_DAYS to catch up),
// and every archive segment whose rows are gone is on disk and hashes to the
// digest recorded for it — unless it was deleted, which only the cold window
// (24 months at least) allows.

/** The archiving job runs daily; an event this much past the hot window is late. */
export const RETENTION_GRACE_DAYS = 2;
const DAY_MS = 86_400_000;
/** Problems listed in the run's details; the count says how many there were. */
const LISTED = 10;

export interface RetentionSloDeps {
  readonly sql: Sql;
  readonly archiveDir: string;
  readonly hotDays: number;
  readonly coldMonths: number;
}

interface SegmentRow {
  first_seq: string;
  last_seq: string;
  sha256: Buffer;
  file: string;
  last_ts: Date;
  deleted_at: Date | null;
}

async function segmentProblem(
  deps: RetentionSloDeps,
  tenant: string,
  segment: SegmentRow,
  coldLine: Date,
): Promise<string | undefined> {
  const where = `tenant ${tenant} segment ${segment.first_seq}–${segment.last_seq}`;
  if (segment.deleted_at !== null) {
    return segment.last_ts < coldLine ? undefined : `${where} was deleted before ${deps.coldMonths} months`;
  }
  // The file name comes from the database, checked there against segment-<16 digits>-<16 digits>.jsonl.gz.
  const file = path.join(deps.archiveDir, tenant, segment.file);
  const bytes = await readIfExists(file);
  if (bytes === undefined) return `${where} is missing from the archive`;
  try {
    if (!(await readDigest(bytes, file)).equals(segment.sha256))
      return `${where} does not hash to its recorded digest`;
  } catch {
    return `${where} is not a readable gzip file`;
  }
  return undefined;
}

export async function checkRetentionSlo(deps: RetentionSloDeps): Promise<CheckOutcome> {
  const now = new Date();
  const [oldest] = await deps.sql<{ at: Date | null }[]>`select enclave.posture_oldest_hot_event() as at`;
  const oldestAt = oldest?.at ?? null;
  const ageDays = oldestAt === null ? null : Math.floor((now.getTime() - oldestAt.getTime()) / DAY_MS);
  const late = ageDays !== null && ageDays > deps.hotDays + RETENTION_GRACE_DAYS;
  const coldLine = new Date(now);
  coldLine.setUTCMonth(coldLine.getUTCMonth() - deps.coldMonths);
  const tenants = await deps.sql<
    { tenant: string }[]
  >`select enclave.posture_chain_tenants()::text as tenant`;
  const problems: string[] = [];
  let segments = 0;
  let deleted = 0;
  for (const { tenant } of tenants) {
    const rows = await deps.sql<SegmentRow[]>`
      select first_seq::text, last_seq::text, sha256, file, last_ts, deleted_at
      from enclave.posture_archive_segments(${tenant}::uuid)`;
    for (const segment of rows) {
      segments++;
      if (segment.deleted_at !== null) deleted++;
      const problem = await segmentProblem(deps, tenant, segment, coldLine);
      if (problem !== undefined) problems.push(problem);
    }
  }
  const figures = {
    oldest_hot_event_at: oldestAt?.toISOString() ?? null,
    oldest_hot_event_age_days: ageDays,
    hot_days: deps.hotDays,
    grace_days: RETENTION_GRACE_DAYS,
    cold_months: deps.coldMonths,
    archive_segments: segments,
    segments_deleted_past_cold_window: deleted,
    problem_count: problems.length,
    problems: problems.slice(0, LISTED),
  };
  const hot =
    ageDays === null
      ? 'no events in the database'
      : `oldest event in the database ${ageDays} days old (line: ${deps.hotDays} days)`;
  if (late || problems.length > 0) {
    const first = late ? `${hot}, past the line` : (problems[0] ?? '');
    return {
      result: 'failed',
      details: { summary: `${first}; ${problems.length} archive problems`, ...figures },
    };
  }
  return {
    result: 'pass',
    details: { summary: `${hot}; ${segments - deleted} archive segments present and intact`, ...figures },
  };
}
