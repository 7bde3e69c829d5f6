import type { Sql } from 'postgres';
import type { Logger } from '../logger.ts';
import {
  callbacksStatus,
  queueStatus,
  type StatusReport,
  THRESHOLDS,
  workersStatus,
  worstStatus,
} from './components.ts';
import {
  type CallbackFigures,
  type PlatformFigures,
  readCallbackFigures,
  readPlatformFigures,
} from './platform-reads.ts';

// The status report (RLY-10), cached briefly: /status and /status.json are
// public and unauthenticated, so a flood of requests must cost one set of
// reads per window, not one per request. Requests during a read wait for that
// same read. A read that fails or is not answered within the bound reports
// the database down, and with it every component read from it.

/** How long one report is served. */
export const STATUS_CACHE_MS = 5000;
/** How long the reads may take before the database counts as down; below the pool's own bound (5 s). */
export const STATUS_READ_TIMEOUT_MS = 2000;

export interface StatusServiceDeps {
  readonly sql: Sql;
  readonly logger: Pick<Logger, 'warn'>;
  readonly cacheMs?: number;
  readonly timeoutMs?: number;
  /** Milliseconds since the epoch; the system clock when absent. */
  readonly now?: () => number;
  readonly readPlatform?: (sql: Sql, timeoutMs: number) => Promise<PlatformFigures>;
  /** Given what the platform reads are given, so the callback read, once wired, is bounded the same way. */
  readonly readCallbacks?: (sql: Sql, timeoutMs: number) => Promise<CallbackFigures>;
}

export type StatusService = ReturnType<typeof createStatusService>;

export function createStatusService(deps: StatusServiceDeps) {
  const cacheMs = deps.cacheMs ?? STATUS_CACHE_MS;
  const timeoutMs = deps.timeoutMs ?? STATUS_READ_TIMEOUT_MS;
  const now = deps.now ?? Date.now;
  const readPlatform = deps.readPlatform ?? readPlatformFigures;
  const readCallbacks = deps.readCallbacks ?? readCallbackFigures;
  let cached: { readonly startedAt: number; readonly report: Promise<StatusReport> } | undefined;

  async function build(startedAt: number): Promise<StatusReport> {
    const [platform, callbacks] = await Promise.all([
      readPlatform(deps.sql, timeoutMs).catch((error: unknown) => {
        deps.logger.warn({ err: error }, 'status: the platform reads failed; reporting the database down');
        return undefined;
      }),
      readCallbacks(deps.sql, timeoutMs).catch((error: unknown) => {
        deps.logger.warn(
          { err: error },
          'status: the callback delivery read failed; reporting callbacks down',
        );
        return undefined;
      }),
    ]);
    const checkedAt = new Date(now()).toISOString();
    const components = {
      ...platformComponents(platform, Math.max(0, now() - startedAt), checkedAt),
      callbacks: {
        status: callbacks === undefined ? 'down' : callbacksStatus(callbacks.successRateHour),
        checked_at: checkedAt,
        success_rate_hour: callbacks?.successRateHour ?? null,
        success_rate_day: callbacks?.successRateDay ?? null,
      },
    };
    return {
      status: worstStatus(Object.values(components).map((component) => component.status)),
      checked_at: checkedAt,
      components,
    };
  }

  return {
    /** The current report: the cached one while it is younger than the window. */
    report(): Promise<StatusReport> {
      const at = now();
      if (cached === undefined || at - cached.startedAt >= cacheMs) {
        cached = { startedAt: at, report: build(at) };
      }
      return cached.report;
    },
  };
}

function platformComponents(
  figures: PlatformFigures | undefined,
  responseMs: number,
  checkedAt: string,
): Omit<StatusReport['components'], 'callbacks'> {
  const window_minutes = THRESHOLDS.workerWindowMinutes;
  if (figures === undefined) {
    const down = { status: 'down', checked_at: checkedAt } as const;
    return {
      database: { ...down, response_ms: null },
      job_workers: { ...down, workers_seen: null, window_minutes, last_heartbeat_at: null },
      queue: { ...down, depth: null, oldest_pending_age_seconds: null },
      agent_instances: { ...down, running: null },
      audit_checkpoints: { ...down, latest_age_seconds: null },
    };
  }
  const operational = { status: 'operational', checked_at: checkedAt } as const;
  return {
    database: { ...operational, response_ms: responseMs },
    job_workers: {
      status: workersStatus(figures.workersSeen),
      checked_at: checkedAt,
      workers_seen: figures.workersSeen,
      window_minutes,
      last_heartbeat_at: figures.lastHeartbeatAt?.toISOString() ?? null,
    },
    queue: {
      status: queueStatus(figures.oldestPendingAgeSeconds),
      checked_at: checkedAt,
      depth: figures.queueDepth,
      oldest_pending_age_seconds: figures.oldestPendingAgeSeconds,
    },
    // A count and an age describe, they do not judge: instances run as their owners want, and
    // checkpoints follow audit activity, so a quiet platform has an old one (AUD-4).
    agent_instances: { ...operational, running: figures.runningInstances },
    audit_checkpoints: { ...operational, latest_age_seconds: figures.latestCheckpointAgeSeconds },
  };
}
