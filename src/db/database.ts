import type { Sql } from 'postgres';
import type { Config, Env } from '../config.ts';
import { AppError } from '../errors.ts';
import { loadOperatorSecret } from '../operator-secrets/secrets.ts';
import { type EmbeddedCluster, startEmbeddedCluster } from './embedded.ts';
import { type MigrateResult, type Migration, migrate, readMigrations } from './migrator.ts';
import { ensureRoles, prepareDatabase } from './roles.ts';
import {
  APP_ROLE,
  type Credentials,
  connect,
  type DbTarget,
  OWNER_ROLE,
  targetFromUrl,
  withDatabase,
} from './target.ts';
import { DB_TIMEOUT_DEFAULT_MS } from './timeouts.ts';

// Start-up of the database side: find or start PostgreSQL, make the roles
// and grants, migrate as the owner, then hand back a pool for the app role.
// After this returns, no connection as the admin or the owner stays open.

export type DatabaseErrorCode = 'db_unreachable' | 'db_unsupported';

const EMBEDDED_DATABASE = 'enclave';
const MIN_SERVER_VERSION = 150000;

export interface Database {
  readonly target: DbTarget;
  readonly app: Sql;
  readonly appCredentials: Credentials;
  readonly ownerCredentials: Credentials;
  readonly migrations: readonly Migration[];
  readonly migrated: MigrateResult;
  readonly embedded: EmbeddedCluster | undefined;
  close(): Promise<void>;
}

export interface OpenDatabaseOptions {
  readonly appPoolSize?: number;
  /** false for read-only tools (doctor): report pending migrations instead of running them. */
  readonly migrate?: boolean;
  /** Bound on every wait of the app pool (ENCLAVE_DB_TIMEOUT_MS; see timeouts.ts). */
  readonly timeoutMs?: number;
}

function describeConnectError(target: DbTarget, error: unknown): AppError {
  const err = error as { code?: string; message?: string };
  const where = `${target.host}:${target.port}/${target.database}`;
  if (err.code === '28P01' || err.code === '28000') {
    return new AppError('db_unreachable', `PostgreSQL at ${where} refused the credentials (${err.code})`, {
      cause: error,
    });
  }
  if (err.code === '3D000') {
    return new AppError('db_unreachable', `database "${target.database}" does not exist at ${where}`, {
      cause: error,
    });
  }
  return new AppError(
    'db_unreachable',
    `cannot reach PostgreSQL at ${where} (${err.code ?? err.message ?? 'error'})`,
    {
      cause: error,
    },
  );
}

async function withAdmin<T>(target: DbTarget, fn: (admin: Sql) => Promise<T>): Promise<T> {
  const admin = connect(target, target.admin, { max: 1, applicationName: 'enclave-admin' });
  try {
    let version: string | undefined;
    try {
      [{ version } = { version: undefined }] = await admin<{ version: string }[]>`
        select current_setting('server_version_num') as version`;
    } catch (error) {
      throw describeConnectError(target, error);
    }
    if (Number(version) < MIN_SERVER_VERSION) {
      throw new AppError('db_unsupported', `PostgreSQL ${MIN_SERVER_VERSION / 10000} or newer is required`);
    }
    return await fn(admin);
  } finally {
    await admin.end({ timeout: 5 });
  }
}

async function embeddedTarget(cluster: EmbeddedCluster): Promise<DbTarget> {
  const server: DbTarget = {
    host: cluster.host,
    port: cluster.port,
    database: 'postgres',
    sslmode: undefined,
    admin: { user: cluster.user, password: cluster.password },
  };
  await withAdmin(server, async (admin) => {
    const [exists] = await admin`select 1 from pg_database where datname = ${EMBEDDED_DATABASE}`;
    if (exists === undefined) {
      await admin.unsafe(`create database ${EMBEDDED_DATABASE}`).catch((error: { code?: string }) => {
        if (error.code !== '42P04') throw error; // created by a process starting alongside us
      });
    }
  });
  return withDatabase(server, EMBEDDED_DATABASE);
}

export async function openDatabase(
  config: Config,
  env: Env,
  options: OpenDatabaseOptions = {},
): Promise<Database> {
  const [ownerPassword, appPassword, migrations] = await Promise.all([
    loadOperatorSecret(config, env, 'db_owner_password'),
    loadOperatorSecret(config, env, 'db_app_password'),
    readMigrations(),
  ]);
  const embedded = config.databaseUrl === undefined ? await startEmbeddedCluster(config.dataDir) : undefined;
  try {
    const target =
      embedded === undefined ? targetFromUrl(config.databaseUrl ?? '') : await embeddedTarget(embedded);
    const ownerCredentials = { user: OWNER_ROLE, password: ownerPassword };
    const appCredentials = { user: APP_ROLE, password: appPassword };
    await withAdmin(target, async (admin) => {
      await ensureRoles(admin, { owner: ownerPassword, app: appPassword });
      await prepareDatabase(admin, target.database);
    });
    let migrated: MigrateResult = { applied: [] };
    if (options.migrate !== false) {
      const owner = connect(target, ownerCredentials, { max: 1, applicationName: 'enclave-migrate' });
      try {
        migrated = await migrate(owner, target, ownerCredentials, migrations);
      } finally {
        await owner.end({ timeout: 5 });
      }
    }
    const app = connect(target, appCredentials, {
      max: options.appPoolSize ?? 10,
      timeoutMs: options.timeoutMs ?? DB_TIMEOUT_DEFAULT_MS,
    });
    return {
      target,
      app,
      appCredentials,
      ownerCredentials,
      migrations,
      migrated,
      embedded,
      async close() {
        await app.end({ timeout: 5 });
        await embedded?.stop();
      },
    };
  } catch (error) {
    await embedded?.stop();
    throw error;
  }
}
