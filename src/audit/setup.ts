import type { KeyObject } from 'node:crypto';
import type { Sql } from 'postgres';
import type { Config, Env } from '../config.ts';
import type { Logger } from '../logger.ts';
import { loadCheckpointKey } from '../operator-secrets/checkpoint-key.ts';
import { type CheckpointService, createCheckpointService } from './checkpoint-log.ts';
import { type AuditSigning, auditSigning } from './checkpoint-signing.ts';
import { type CheckpointPublisher, createDirectoryPublisher } from './publisher.ts';
import { createRetentionService, type RetentionService } from './retention.ts';

// What the server, the worker and the CLI share about checkpoints and
// retention, built once at start from the config and the checkpoint key.

export interface AuditSetup {
  readonly signing: AuditSigning;
  readonly publisher: CheckpointPublisher;
  readonly archiveDir: string;
  readonly hotDays: number;
  readonly coldMonths: number;
  readonly checkpointDelaySeconds: number;
}

export type AuditConfig = Pick<
  Config,
  | 'publicUrl'
  | 'checkpointDir'
  | 'auditArchiveDir'
  | 'auditHotDays'
  | 'auditColdMonths'
  | 'checkpointDelaySeconds'
>;

export function createAuditSetup(config: AuditConfig, checkpointKey: KeyObject): AuditSetup {
  return {
    signing: auditSigning(config.publicUrl, checkpointKey),
    publisher: createDirectoryPublisher(config.checkpointDir),
    archiveDir: config.auditArchiveDir,
    hotDays: config.auditHotDays,
    coldMonths: config.auditColdMonths,
    checkpointDelaySeconds: config.checkpointDelaySeconds,
  };
}

export async function loadAuditSetup(
  config: AuditConfig & Pick<Config, 'env' | 'dataDir'>,
  env: Env,
): Promise<AuditSetup> {
  return createAuditSetup(config, await loadCheckpointKey(config, env));
}

export interface AuditServices {
  readonly checkpoints: CheckpointService;
  readonly retention: RetentionService;
}

export function createAuditServices(
  setup: AuditSetup,
  sql: Sql,
  logger: Pick<Logger, 'info' | 'error'>,
): AuditServices {
  return {
    checkpoints: createCheckpointService({ sql, signing: setup.signing, publisher: setup.publisher, logger }),
    retention: createRetentionService({
      sql,
      archiveDir: setup.archiveDir,
      hotDays: setup.hotDays,
      coldMonths: setup.coldMonths,
      logger,
    }),
  };
}
