// The status page's components (RLY-10) and the thresholds that turn their
// figures into a status. Pure functions: the reads live in platform-reads.ts,
// the caching in status-service.ts. Every figure is a platform-wide aggregate
// (a count, an age, a rate); no tenant, agent or job identity is ever part of it.

export type ComponentStatus = 'operational' | 'degraded' | 'down';
/** Only the callbacks component has it: no delivery finished in the hour (see readCallbackFigures). */
export type CallbacksStatus = ComponentStatus | 'no_data';

/** The thresholds, as the README's "Status page" section documents them. */
export const THRESHOLDS = {
  /** A worker counts as seen when its heartbeat (cron, every minute) is this recent. */
  workerWindowMinutes: 3,
  /** The oldest job due but not yet taken: older than this is degraded, and down past the second. */
  queueDegradedSeconds: 5 * 60,
  queueDownSeconds: 30 * 60,
  /** Callback deliveries that succeeded over the last hour: below these, degraded and down. */
  callbacksDegradedRate: 0.95,
  callbacksDownRate: 0.5,
} as const;

export interface DatabaseComponent {
  readonly status: ComponentStatus;
  readonly checked_at: string;
  /** How long the status reads took (a figure, not judged: one slow answer is noise); null when they did not finish. */
  readonly response_ms: number | null;
}

export interface WorkersComponent {
  readonly status: ComponentStatus;
  readonly checked_at: string;
  /** Worker processes whose heartbeat is within the window. */
  readonly workers_seen: number | null;
  readonly window_minutes: number;
  readonly last_heartbeat_at: string | null;
}

export interface QueueComponent {
  readonly status: ComponentStatus;
  readonly checked_at: string;
  /** Jobs due now and not taken by a worker, less those held behind a live run of their named queue (platform-reads.ts). */
  readonly depth: number | null;
  /** How long the oldest of them has been due; null when there is none or it could not be read. */
  readonly oldest_pending_age_seconds: number | null;
}

export interface CallbacksComponent {
  readonly status: CallbacksStatus;
  readonly checked_at: string;
  /** Share of callback deliveries (0..1) that succeeded; null when there were none. */
  readonly success_rate_hour: number | null;
  readonly success_rate_day: number | null;
}

export interface InstancesComponent {
  readonly status: ComponentStatus;
  readonly checked_at: string;
  readonly running: number | null;
}

export interface CheckpointsComponent {
  readonly status: ComponentStatus;
  readonly checked_at: string;
  /** Age of the newest signed audit checkpoint; null when there is none yet or it could not be read. */
  readonly latest_age_seconds: number | null;
}

export interface StatusReport {
  /** The worst status of the components (callbacks' no_data does not count). */
  readonly status: ComponentStatus;
  readonly checked_at: string;
  readonly components: {
    readonly database: DatabaseComponent;
    readonly job_workers: WorkersComponent;
    readonly queue: QueueComponent;
    readonly callbacks: CallbacksComponent;
    readonly agent_instances: InstancesComponent;
    readonly audit_checkpoints: CheckpointsComponent;
  };
}

const RANK: Readonly<Record<ComponentStatus, number>> = { operational: 0, degraded: 1, down: 2 };

export function worstStatus(statuses: readonly CallbacksStatus[]): ComponentStatus {
  let worst: ComponentStatus = 'operational';
  for (const status of statuses) {
    if (status !== 'no_data' && RANK[status] > RANK[worst]) worst = status;
  }
  return worst;
}

/** No worker seen in the window: nothing takes jobs (mail, deliveries, retention). */
export function workersStatus(workersSeen: number): ComponentStatus {
  return workersSeen === 0 ? 'down' : 'operational';
}

export function queueStatus(oldestPendingAgeSeconds: number | null): ComponentStatus {
  if (oldestPendingAgeSeconds === null) return 'operational';
  if (oldestPendingAgeSeconds > THRESHOLDS.queueDownSeconds) return 'down';
  if (oldestPendingAgeSeconds > THRESHOLDS.queueDegradedSeconds) return 'degraded';
  return 'operational';
}

/** Judged on the last hour, the window an operator can act on; no deliveries in it is no_data. */
export function callbacksStatus(successRateHour: number | null): CallbacksStatus {
  if (successRateHour === null) return 'no_data';
  if (successRateHour < THRESHOLDS.callbacksDownRate) return 'down';
  if (successRateHour < THRESHOLDS.callbacksDegradedRate) return 'degraded';
  return 'operational';
}
