import { Type } from 'typebox';
import { THRESHOLDS } from './components.ts';

// The documented shape of /status.json (RLY-10); as every response schema, an
// allowlist: a field not named here cannot leave.

const Status = Type.Union([Type.Literal('operational'), Type.Literal('degraded'), Type.Literal('down')], {
  description: 'operational, degraded (working, past a threshold) or down',
});
const CheckedAt = Type.String({ format: 'date-time', description: 'When the figures were read.' });
const Count = Type.Union([Type.Integer({ minimum: 0 }), Type.Null()], {
  description: 'null when the database could not be read',
});
const Seconds = Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]);
const Rate = Type.Union([Type.Number({ minimum: 0, maximum: 1 }), Type.Null()], {
  description: 'Share of deliveries that succeeded; null when there were none to measure',
});

export const StatusReportSchema = Type.Object(
  {
    status: Status,
    checked_at: CheckedAt,
    components: Type.Object({
      database: Type.Object(
        {
          status: Status,
          checked_at: CheckedAt,
          response_ms: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
        },
        {
          description:
            'operational when the status reads answer; down when they fail or get no answer within 2 s.',
        },
      ),
      job_workers: Type.Object(
        {
          status: Status,
          checked_at: CheckedAt,
          workers_seen: Count,
          window_minutes: Type.Integer(),
          last_heartbeat_at: Type.Union([CheckedAt, Type.Null()]),
        },
        {
          description: `Worker processes whose heartbeat (cron, every minute) is within the last ${THRESHOLDS.workerWindowMinutes} minutes; down when none is.`,
        },
      ),
      queue: Type.Object(
        { status: Status, checked_at: CheckedAt, depth: Count, oldest_pending_age_seconds: Seconds },
        {
          description: `Jobs due and not yet taken, and how long the oldest has waited (jobs waiting behind a running job of their own named queue, such as one callback endpoint's deliveries, are not counted): degraded past ${THRESHOLDS.queueDegradedSeconds} s, down past ${THRESHOLDS.queueDownSeconds} s.`,
        },
      ),
      callbacks: Type.Object(
        {
          status: Type.Union([Status, Type.Literal('no_data')]),
          checked_at: CheckedAt,
          success_rate_hour: Rate,
          success_rate_day: Rate,
        },
        {
          description: `Callback delivery success over the last hour and day, judged on the hour: degraded below ${THRESHOLDS.callbacksDegradedRate}, down below ${THRESHOLDS.callbacksDownRate}; no_data (rates null) when no delivery finished (succeeded or failed) in the hour; pending ones are not an outcome yet.`,
        },
      ),
      agent_instances: Type.Object(
        { status: Status, checked_at: CheckedAt, running: Count },
        { description: 'Agent instances running, platform-wide; down only when it could not be read.' },
      ),
      audit_checkpoints: Type.Object(
        { status: Status, checked_at: CheckedAt, latest_age_seconds: Seconds },
        {
          description:
            'Age of the newest signed audit checkpoint (null before the first). Checkpoints follow audit activity, so an old one is not a fault; down only when it could not be read.',
        },
      ),
    }),
  },
  {
    description:
      'Platform health; no tenant data. status is the worst of the components (no_data does not count). Cached for 5 s.',
  },
);
