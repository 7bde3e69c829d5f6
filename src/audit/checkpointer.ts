import type { Sql } from 'postgres';
import type { Logger } from '../logger.ts';
import type { CheckpointService, MadeCheckpoint } from './checkpoint-log.ts';

// Signs a checkpoint within ENCLAVE_CHECKPOINT_DELAY seconds of any chain head
// moving (AUD-4, AUD-8): until a checkpoint commits to them, the newest events
// could be dropped or forged by someone who can write the database, so that
// window is kept to seconds, not an hour.
//
// Every stored event advances the sequence enclave.audit_appends (inside
// audit_insert_checked). Reading it is one cheap query, so the checkpointer
// polls it about once a second and runs only when it moved: at once after a
// quiet spell, and otherwise at most once per delay, batching every head that
// moved since the last run. Several processes may run one each; the log's
// advisory lock makes the second find nothing to do.

export interface CheckpointerDeps {
  readonly sql: Sql;
  readonly checkpoints: Pick<CheckpointService, 'makeCheckpoint'>;
  readonly delaySeconds: number;
  readonly logger: Pick<Logger, 'warn'>;
  /** Called after each run that found appends to commit to (tests await it). */
  readonly onRun?: (made: MadeCheckpoint) => void;
  /** Called after each poll (tests count them to see that nothing ran). */
  readonly onPoll?: () => void;
}

export interface Checkpointer {
  stop(): Promise<void>;
}

export function startCheckpointer(deps: CheckpointerDeps): Checkpointer {
  const { sql, checkpoints, delaySeconds, logger } = deps;
  const delayMs = delaySeconds * 1000;
  let seen: string | undefined;
  let lastRun = Number.NEGATIVE_INFINITY;
  let failing = false;
  let polling: Promise<void> | undefined;

  async function poll(): Promise<void> {
    const [row] = await sql<{ appends: string }[]>`
      select case when is_called then last_value else 0 end::text as appends from enclave.audit_appends`;
    const appends = row?.appends ?? '0';
    if (appends === seen || Date.now() - lastRun < delayMs) return;
    // Taken before the run: appends during it move the sequence again and are caught next time.
    seen = appends;
    lastRun = Date.now();
    deps.onRun?.(await checkpoints.makeCheckpoint());
  }

  const timer = setInterval(
    () => {
      polling ??= poll()
        .then(
          () => {
            failing = false;
          },
          (error: unknown) => {
            // Once per outage, not once a second; the next poll retries.
            if (!failing)
              logger.warn({ err: error }, 'audit checkpointer: could not check or sign; retrying');
            failing = true;
            seen = undefined;
          },
        )
        .finally(() => {
          polling = undefined;
          deps.onPoll?.();
        });
    },
    Math.min(1000, delayMs / 2),
  );
  return {
    async stop() {
      clearInterval(timer);
      await polling;
    },
  };
}
