import { type Env, loadConfig } from '../config.ts';
import { openDatabase } from '../db/database.ts';
import { isUuid, withTenant } from '../db/tenant.ts';
import { createVault, loadMasterKeyProvider } from '../vault/service.ts';
import type { Io } from './main.ts';
import { shown, UsageError } from './usage-error.ts';

// `enclave keys rotate-master|rotate-tenant` (VLT-6): rotation runs against
// the same database and master-key source as the servers, while they keep
// serving. Each rotation is recorded in the audit log with the actor
// `operator:cli`.

const CONSOLE_ACTOR = 'operator:cli';

type KeysCommand =
  | { readonly action: 'rotate-master' }
  | { readonly action: 'rotate-tenant'; readonly tenantId: string };

/** Checks the whole command line before anything touches a key or the database. */
export function parseKeysCommand(rest: readonly string[]): KeysCommand {
  const [action, first, more] = rest;
  switch (action) {
    case undefined:
      throw new UsageError('"keys" needs an action: rotate-master or rotate-tenant');
    case 'rotate-master':
      if (first !== undefined)
        throw new UsageError(`"keys rotate-master" takes no arguments (got ${shown(first)})`);
      return { action };
    case 'rotate-tenant':
      if (first === undefined) throw new UsageError('"keys rotate-tenant" needs the tenant id');
      if (more !== undefined)
        throw new UsageError(`"keys rotate-tenant" takes one tenant id (got also ${shown(more)})`);
      if (!isUuid(first)) throw new UsageError(`${shown(first)} is not a tenant id (a uuid)`);
      return { action, tenantId: first.toLowerCase() };
    default:
      throw new UsageError(`unknown keys action ${shown(action)} (use rotate-master or rotate-tenant)`);
  }
}

export async function runKeys(rest: readonly string[], env: Env, io: Io): Promise<number> {
  const command = parseKeysCommand(rest);
  const config = loadConfig(env, process.cwd());
  const vault = createVault({ provider: await loadMasterKeyProvider(config, env) });
  const db = await openDatabase(config, env, { appPoolSize: 2 });
  try {
    // The key must open what the database holds before anything is re-wrapped with it.
    await vault.checkMasterKeys(db.app);
    if (command.action === 'rotate-master') {
      const rotated = await vault.rotateMasterKey(db.app, CONSOLE_ACTOR);
      io.out(
        `Master key rotated to version ${rotated.to}: ${rotated.dataKeys} data keys of ${rotated.tenants} tenants re-wrapped.`,
      );
      if (rotated.retired.length > 0) io.out(`Retired version(s) ${rotated.retired.join(', ')}.`);
      if (rotated.leftInProvider.length > 0) {
        io.out(
          `Nothing uses version(s) ${rotated.leftInProvider.join(', ')} any more: remove them from ENCLAVE_MASTER_KEY on every server.`,
        );
      }
      return 0;
    }
    const exists = await withTenant(
      db.app,
      command.tenantId,
      (tx) => tx`select 1 from tenants where id = ${command.tenantId}::uuid`,
    );
    if (exists.length === 0) {
      io.err(`enclave: no tenant has the id ${command.tenantId}`);
      return 1;
    }
    const rotated = await vault.rotateTenantKey(db.app, command.tenantId, CONSOLE_ACTOR);
    io.out(
      `Data key of tenant ${command.tenantId} rotated from version ${rotated.from} to ${rotated.to}: ${rotated.credentials} credentials and ${rotated.totpSecrets} TOTP secrets re-encrypted.`,
    );
    return 0;
  } finally {
    await db.close();
  }
}
