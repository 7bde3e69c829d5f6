import type { Sql } from 'postgres';
import type { AuditSetup } from '../audit/setup.ts';
import { checkChainIntegrity } from './chain-integrity.ts';
import { checkCheckpointFreshness } from './checkpoint-freshness.ts';
import { checkTenantIsolation } from './isolation-probe.ts';
import { checkKeyHygiene } from './key-hygiene.ts';
import { checkRetentionSlo } from './retention-slo.ts';
import { type PostureCheckName, type PostureRun, runVerifier, type Verifier } from './runs.ts';

// The five verifiers of OPS-5, each run by its own worker cron task
// (posture_<check>, every ENCLAVE_POSTURE_INTERVAL_MINUTES, and once shortly
// after the worker starts).

export interface PostureDeps {
  readonly sql: Sql;
  readonly audit: Pick<
    AuditSetup,
    'signing' | 'archiveDir' | 'hotDays' | 'coldMonths' | 'checkpointDelaySeconds'
  >;
  /** A run not finished by then is recorded as `error` (VERIFIER_TIMEOUT_MS when absent). */
  readonly timeoutMs?: number;
}

export function createPostureVerifiers(deps: PostureDeps): Readonly<Record<PostureCheckName, Verifier>> {
  const { sql, audit } = deps;
  return {
    chain_integrity: () => checkChainIntegrity({ sql, signing: audit.signing }),
    tenant_isolation: () => checkTenantIsolation(sql),
    retention_slo: () =>
      checkRetentionSlo({
        sql,
        archiveDir: audit.archiveDir,
        hotDays: audit.hotDays,
        coldMonths: audit.coldMonths,
      }),
    key_hygiene: () => checkKeyHygiene(sql),
    checkpoint_freshness: () => checkCheckpointFreshness({ sql, delaySeconds: audit.checkpointDelaySeconds }),
  };
}

export function createPostureService(deps: PostureDeps) {
  const verifiers = createPostureVerifiers(deps);
  return {
    /** Runs one verifier and records the run (an error is recorded, not thrown). */
    run: (check: PostureCheckName): Promise<PostureRun> =>
      runVerifier(
        deps.sql,
        check,
        verifiers[check],
        deps.timeoutMs === undefined ? {} : { timeoutMs: deps.timeoutMs },
      ),
  };
}

export type PostureService = ReturnType<typeof createPostureService>;

/** The worker task of each check. */
export type PostureTaskName = `posture_${PostureCheckName}`;
export const postureTaskName = (check: PostureCheckName): PostureTaskName => `posture_${check}`;
