import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import type { LineSink } from '../audit/bundle-export.ts';
import { writeAuditBundle } from '../audit/bundle-export.ts';
import { createAuditServices, loadAuditSetup } from '../audit/setup.ts';
import { type Env, loadConfig } from '../config.ts';
import { openDatabase } from '../db/database.ts';
import { isUuid, serviceQuery, withTenant } from '../db/tenant.ts';
import { createLogger } from '../logger.ts';
import type { Io } from './main.ts';
import { shown, UsageError } from './usage-error.ts';

// `enclave audit checkpoint|export`: the operator's side of the recovery kit
// (AUD-4, AUD-5). Each opens the same database `npm start` uses.

export const EXPORT_REASON = 'operator export of the audit recovery bundle (enclave audit export)';

export interface AuditArgs {
  readonly rest: readonly string[];
  readonly tenant: string | undefined;
  readonly bundle: string | undefined;
  readonly consistencyFrom: string | undefined;
}

type AuditCommand =
  | { readonly action: 'checkpoint' }
  | {
      readonly action: 'export';
      readonly tenant: string;
      readonly bundle: string;
      readonly consistencyFrom: bigint[];
    };

export function parseAuditCommand(args: AuditArgs): AuditCommand {
  const [action, ...extra] = args.rest;
  if (extra.length > 0) throw new UsageError(`"audit ${action}" takes no arguments (got ${shown(extra[0])})`);
  switch (action) {
    case 'checkpoint':
      if (args.tenant !== undefined || args.bundle !== undefined || args.consistencyFrom !== undefined) {
        throw new UsageError('--tenant, --bundle and --consistency-from are options of "audit export"');
      }
      return { action };
    case 'export': {
      if (args.tenant === undefined || !isUuid(args.tenant)) {
        throw new UsageError(`"audit export" needs --tenant TENANT, a tenant id (got ${shown(args.tenant)})`);
      }
      if (args.bundle === undefined || args.bundle === '')
        throw new UsageError('"audit export" needs --bundle FILE');
      const sizes = args.consistencyFrom?.split(',') ?? [];
      if (!sizes.every((size) => /^[1-9][0-9]{0,18}$/.test(size))) {
        throw new UsageError(
          `--consistency-from takes checkpoint sizes like 12,40 (got ${shown(args.consistencyFrom)})`,
        );
      }
      return {
        action,
        tenant: args.tenant.toLowerCase(),
        bundle: args.bundle,
        consistencyFrom: sizes.map((size) => BigInt(size)),
      };
    }
    case undefined:
      throw new UsageError('"audit" needs an action: checkpoint or export');
    default:
      throw new UsageError(`unknown audit action ${shown(action)} (use checkpoint or export)`);
  }
}

function fileSink(stream: ReturnType<typeof createWriteStream>): LineSink {
  return async (line) => {
    if (!stream.write(`${line}\n`)) await once(stream, 'drain');
  };
}

export async function runAudit(args: AuditArgs, env: Env, io: Io): Promise<number> {
  const command = parseAuditCommand(args);
  const config = loadConfig(env, process.cwd());
  const audit = await loadAuditSetup(config, env);
  const db = await openDatabase(config, env, { appPoolSize: 2 });
  try {
    if (command.action === 'checkpoint') {
      const services = createAuditServices(audit, db.app, createLogger('silent'));
      const made = await services.checkpoints.makeCheckpoint();
      const size = made.checkpoint.size;
      if (made.refused.length > 0) {
        io.err(
          `Checkpoints of size ${made.refused.join(', ')} are in the database but their notes do not verify with this server's checkpoint key: they were not published. Someone with database access recorded them; treat it as tampering.`,
        );
      }
      io.out(
        made.created
          ? `Checkpoint of size ${size} signed (${made.leavesAppended} new leaves), published to ${audit.publisher.location}.`
          : `No audit chain moved since the checkpoint of size ${size}; nothing to sign.`,
      );
      return 0;
    }
    // Whether the tenant exists, before its log records an export (which needs the tenant).
    const [tenant] = await withTenant(db.app, command.tenant, (tx) => tx`select 1 from tenants`);
    if (tenant === undefined) throw new UsageError(`no tenant ${command.tenant}`);
    const stream = createWriteStream(command.bundle, { mode: 0o600 });
    const opened = once(stream, 'open');
    await opened;
    let summary: Awaited<ReturnType<typeof writeAuditBundle>>;
    try {
      summary = await serviceQuery(
        db.app,
        { tenantId: command.tenant, reason: EXPORT_REASON },
        async (tx) => {
          return writeAuditBundle(tx, command.tenant, audit, fileSink(stream), {
            consistencyFrom: command.consistencyFrom,
          });
        },
        // The bundle then ends with this export's own record, instead of being one event behind.
        { recordFirst: true },
      );
    } finally {
      stream.end();
      await once(stream, 'close');
    }
    const checkpoint =
      summary.checkpointSize === undefined
        ? 'no checkpoint yet'
        : `checkpoint of size ${summary.checkpointSize}`;
    io.out(
      `Wrote ${command.bundle}: ${summary.events} events, ${summary.segments} archive segments, ${checkpoint}.`,
    );
    io.out(`Verify it anywhere with: enclave-verify ${command.bundle}`);
    return 0;
  } finally {
    await db.close();
  }
}
