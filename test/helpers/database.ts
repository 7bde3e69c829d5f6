import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { type Migration, readMigrations } from '../../src/db/migrator.ts';
import { prepareDatabase } from '../../src/db/roles.ts';
import {
  APP_ROLE,
  type Credentials,
  connect,
  type DbTarget,
  OWNER_ROLE,
  withDatabase,
} from '../../src/db/target.ts';
import type { TestClusterInfo } from './cluster.ts';

// A database of its own for one test file, cloned from the migrated template
// (or empty, for migrator tests), with pools for each role.

export interface TestDatabase {
  readonly name: string;
  readonly target: DbTarget;
  readonly migrations: readonly Migration[];
  readonly appCredentials: Credentials;
  readonly ownerCredentials: Credentials;
  /** Pool as enclave_app: what every request uses. */
  readonly app: Sql;
  /** Superuser on this database: for tests that play an attacker or inspect the catalog. */
  readonly superuser: Sql;
  /** A further pool for the given role, closed by drop(). */
  connectAs(credentials: Credentials, max?: number): Sql;
  drop(): Promise<void>;
}

export function testClusterInfo(): TestClusterInfo {
  const raw = process.env.ENCLAVE_TEST_CLUSTER;
  if (raw === undefined) throw new Error('ENCLAVE_TEST_CLUSTER is not set: run the tests with npm test');
  return JSON.parse(raw) as TestClusterInfo;
}

export interface TestDatabaseOptions {
  readonly empty?: boolean;
  /** A cluster of the file's own instead of the run's shared one (for tests that stop it). */
  readonly cluster?: TestClusterInfo;
  /** Bounds the app pool as ENCLAVE_DB_TIMEOUT_MS does in production (db/timeouts.ts). */
  readonly timeoutMs?: number;
}

export async function createTestDatabase(options: TestDatabaseOptions = {}): Promise<TestDatabase> {
  const info = options.cluster ?? testClusterInfo();
  const name = `test_${randomBytes(6).toString('hex')}`;
  const server = connect(info.server, info.server.admin, { max: 1 });
  try {
    await server.unsafe(
      `create database ${name}${options.empty === true ? '' : ` template ${info.template}`}`,
    );
  } finally {
    await server.end();
  }
  const target = withDatabase(info.server, name);
  const superuser = connect(target, target.admin, { max: 2 });
  await prepareDatabase(superuser, name);
  const pools: Sql[] = [superuser];
  const connectAs = (credentials: Credentials, max = 5): Sql => {
    const sql = connect(target, credentials, {
      max,
      ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
    });
    pools.push(sql);
    return sql;
  };
  const appCredentials = { user: APP_ROLE, password: info.appPassword };
  return {
    name,
    target,
    migrations: await readMigrations(),
    appCredentials,
    ownerCredentials: { user: OWNER_ROLE, password: info.ownerPassword },
    app: connectAs(appCredentials, 10),
    superuser,
    connectAs,
    async drop() {
      await Promise.all(pools.map((sql) => sql.end({ timeout: 5 })));
      const admin = connect(info.server, info.server.admin, { max: 1 });
      try {
        await admin.unsafe(`drop database if exists ${name} with (force)`);
      } finally {
        await admin.end();
      }
    },
  };
}
