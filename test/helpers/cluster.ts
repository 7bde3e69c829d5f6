import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startEmbeddedCluster } from '../../src/db/embedded.ts';
import { migrate, readMigrations } from '../../src/db/migrator.ts';
import { ensureRoles, prepareDatabase } from '../../src/db/roles.ts';
import {
  APP_ROLE,
  connect,
  type DbTarget,
  OWNER_ROLE,
  targetFromUrl,
  withDatabase,
} from '../../src/db/target.ts';

// One PostgreSQL cluster per test run (or benchmark run): an embedded one in
// a temporary directory, or the server named by ENCLAVE_TEST_DATABASE_URL.
// A template database is migrated once; each test file clones it.

export const TEMPLATE_DATABASE = 'enclave_template';

export interface TestClusterInfo {
  readonly server: DbTarget;
  readonly ownerPassword: string;
  readonly appPassword: string;
  readonly template: string;
}

export interface TestCluster {
  readonly info: TestClusterInfo;
  stop(): Promise<void>;
}

export async function startTestCluster(env: NodeJS.ProcessEnv = process.env): Promise<TestCluster> {
  const external = env.ENCLAVE_TEST_DATABASE_URL;
  const dir = external === undefined ? await mkdtemp(path.join(tmpdir(), 'enclave-test-')) : undefined;
  const cluster = dir === undefined ? undefined : await startEmbeddedCluster(dir);
  const stop = async (): Promise<void> => {
    await cluster?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  };
  try {
    const server: DbTarget =
      cluster === undefined
        ? withDatabase(targetFromUrl(external ?? ''), 'postgres')
        : {
            host: cluster.host,
            port: cluster.port,
            database: 'postgres',
            sslmode: undefined,
            admin: { user: cluster.user, password: cluster.password },
          };
    const info: TestClusterInfo = {
      server,
      ownerPassword: randomBytes(24).toString('base64url'),
      appPassword: randomBytes(24).toString('base64url'),
      template: TEMPLATE_DATABASE,
    };
    const admin = connect(server, server.admin, { max: 1 });
    try {
      await ensureRoles(admin, { owner: info.ownerPassword, app: info.appPassword });
      await admin.unsafe(`drop database if exists ${TEMPLATE_DATABASE} with (force)`);
      await admin.unsafe(`create database ${TEMPLATE_DATABASE}`);
    } finally {
      await admin.end();
    }
    const templateTarget = withDatabase(server, TEMPLATE_DATABASE);
    const templateAdmin = connect(templateTarget, server.admin, { max: 1 });
    try {
      await prepareDatabase(templateAdmin, TEMPLATE_DATABASE);
    } finally {
      await templateAdmin.end();
    }
    const ownerCredentials = { user: OWNER_ROLE, password: info.ownerPassword };
    const owner = connect(templateTarget, ownerCredentials, { max: 1 });
    try {
      await migrate(owner, templateTarget, ownerCredentials, await readMigrations());
    } finally {
      await owner.end();
    }
    return { info, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

export function appCredentials(info: TestClusterInfo): { user: string; password: string } {
  return { user: APP_ROLE, password: info.appPassword };
}
