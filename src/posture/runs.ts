import type { Sql } from 'postgres';
import { AppError } from '../errors.ts';

// The posture table (OPS-5): one row per verifier run, whatever happened. A
// verifier returns `pass` or `failed` with its figures; one that throws, or
// has not answered within its timeout, is recorded as `error` with the
// message, so a broken or hung verifier is never missing from /security and
// never leaves an old pass as its latest result.

export const POSTURE_CHECKS = [
  'chain_integrity',
  'tenant_isolation',
  'retention_slo',
  'key_hygiene',
  'checkpoint_freshness',
] as const;
export type PostureCheckName = (typeof POSTURE_CHECKS)[number];

export type PostureResult = 'pass' | 'failed' | 'error';

/** Figures of a run: plain JSON, with a one-line summary a reader sees first. */
export type PostureDetails = { readonly summary: string } & Readonly<Record<string, unknown>>;

export interface CheckOutcome {
  readonly result: 'pass' | 'failed';
  readonly details: PostureDetails;
}

export type Verifier = () => Promise<CheckOutcome>;

export interface PostureRun {
  readonly check: PostureCheckName;
  readonly result: PostureResult;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  readonly durationMs: number;
  readonly details: PostureDetails;
}

/** Runs are kept this long; the page shows only the latest of each check. */
export const RUN_HISTORY_DAYS = 30;
/** A thrown message is cut to this length before it is stored and shown. */
const MESSAGE_CHARS = 300;
/** A verifier that has not answered by then is recorded as `error` (its work is not stopped, only no longer awaited). */
export const VERIFIER_TIMEOUT_MS = 10 * 60_000;

export type PostureErrorCode = 'posture_verifier_timeout';

export class VerifierTimeoutError extends AppError<PostureErrorCode> {
  constructor(timeoutMs: number) {
    super('posture_verifier_timeout', `timed out after ${timeoutMs / 1000} s without a result`);
  }
}

/** `work`, or a VerifierTimeoutError once `timeoutMs` has passed without it settling. */
async function within<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new VerifierTimeoutError(timeoutMs)), timeoutMs);
  });
  try {
    // race() handles `work` settling late too, so a late rejection is not left unhandled.
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function messageOf(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.length > MESSAGE_CHARS ? `${text.slice(0, MESSAGE_CHARS)}…` : text;
}

export interface RunOptions {
  /** VERIFIER_TIMEOUT_MS when absent. */
  readonly timeoutMs?: number;
}

/** Runs one verifier and records its run; never throws for the verifier's own failure or hang. */
export async function runVerifier(
  sql: Sql,
  check: PostureCheckName,
  verify: Verifier,
  options: RunOptions = {},
): Promise<PostureRun> {
  const startedAt = new Date();
  let outcome: { result: PostureResult; details: PostureDetails };
  try {
    outcome = await within(verify(), options.timeoutMs ?? VERIFIER_TIMEOUT_MS);
  } catch (error) {
    const message = messageOf(error);
    outcome = {
      result: 'error',
      details: {
        summary: `the verifier did not finish: ${message}`,
        error: message,
        ...(error instanceof VerifierTimeoutError ? { timed_out: true } : {}),
      },
    };
  }
  const finishedAt = new Date();
  const run: PostureRun = {
    check,
    ...outcome,
    startedAt,
    finishedAt,
    durationMs: Math.max(0, finishedAt.getTime() - startedAt.getTime()),
  };
  await sql.begin(async (tx) => {
    await tx`
      insert into posture_runs (check_name, result, started_at, finished_at, duration_ms, details)
      values (${check}, ${run.result}, ${startedAt}, ${finishedAt}, ${run.durationMs}::int,
              ${tx.json(JSON.parse(JSON.stringify(run.details)))})`;
    await tx`
      delete from posture_runs
      where check_name = ${check} and finished_at < now() - make_interval(days => ${RUN_HISTORY_DAYS})`;
  });
  return run;
}

/** The newest run of each check that has run, in POSTURE_CHECKS order. */
export async function latestRuns(sql: Sql): Promise<PostureRun[]> {
  const rows = await sql<
    {
      check_name: string;
      result: PostureResult;
      started_at: Date;
      finished_at: Date;
      duration_ms: number;
      details: PostureDetails;
    }[]
  >`
    select distinct on (check_name) check_name, result, started_at, finished_at, duration_ms, details
    from posture_runs
    where check_name = any(${[...POSTURE_CHECKS]}::text[])
    order by check_name, finished_at desc`;
  const byName = new Map(rows.map((row) => [row.check_name, row]));
  return POSTURE_CHECKS.flatMap((check) => {
    const row = byName.get(check);
    return row === undefined
      ? []
      : [
          {
            check,
            result: row.result,
            startedAt: row.started_at,
            finishedAt: row.finished_at,
            durationMs: row.duration_ms,
            details: row.details,
          },
        ];
  });
}
