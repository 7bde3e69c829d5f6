import { createHash, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before } from 'node:test';
import { loadTemplateCatalog, type TemplateCatalog, templateDirs } from '../../src/agents/templates.ts';
import type { AuditSetup } from '../../src/audit/setup.ts';
import { type Config, loadConfig } from '../../src/config.ts';
import { type App, buildApp } from '../../src/http/app.ts';
import { createRateLimits, type RateLimits } from '../../src/http/rate-limits.ts';
import { loadIdentityProviders } from '../../src/identities/providers.ts';
import { createLogger } from '../../src/logger.ts';
import { loadSmtpUrl } from '../../src/operator-secrets/smtp-url.ts';
import { envMasterKeyProvider } from '../../src/vault/master-keys.ts';
import { createVault, type Vault } from '../../src/vault/service.ts';
import { testAuditSetup } from './audit.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';
import { checkResponsesAgainstOpenApi } from './openapi-conformance.ts';

// Builds the real app against a test database, for app.inject(). Log lines
// are captured so tests can assert what reached the log.

export interface TestApp {
  readonly app: App;
  readonly config: Config;
  readonly logLines: () => string[];
  readonly rateLimits: RateLimits;
  /** The app's session key (signs its session and device cookies). */
  readonly sessionKey: string;
  /** The app's checkpoint key, publisher and archive (a fresh in-memory key per app). */
  readonly audit: AuditSetup;
  /** The app's relay card-signing key (a fresh in-memory key per app, as the checkpoint key). */
  readonly relaySigningKey: KeyObject;
  /** The built-in agent templates (and ENCLAVE_TEMPLATES_DIR's, when `env` sets it). */
  readonly templates: TemplateCatalog;
  /** The app's vault, under the test database's master key (see testVault). */
  readonly vault: Vault;
  /** Responses so far that differ from /openapi.json; closing the app fails while any do. */
  readonly openApiMismatches: () => string[];
}

/**
 * A vault whose master key (version 1) is derived from the database name, so
 * every app built on one test database opens the same data keys.
 */
export async function testVault(db: Pick<TestDatabase, 'name' | 'app'>): Promise<Vault> {
  const key = createHash('sha256').update(`enclave test master key ${db.name}`).digest('base64');
  const vault = createVault({ provider: envMasterKeyProvider(`1:${key}`, 'the test master key') });
  await vault.checkMasterKeys(db.app);
  return vault;
}

/** A log destination that keeps each JSON line it is given in `lines`, for tests to read. */
export function lineSink(lines: string[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((line) => line !== ''),
      );
      done();
    },
  });
}

export interface TestAppOptions {
  /**
   * Check every response against /openapi.json (default true). Only the bench
   * turns it off, so it measures the app as production runs it.
   */
  readonly openApiConformance?: boolean;
  /**
   * 'production': hash new passwords at the production cost (ln=17, 128 MiB,
   * about a second each here), for the tests that prove the cost itself
   * (ACC-2) or load the password pool (ACC-5), and for the bench, which
   * measures the app as production runs it. 'test': TEST_PASSWORD_PARAMS.
   * Default: 'test', except for an app configured as production, which
   * refuses cheaper parameters.
   */
  readonly passwordCost?: 'test' | 'production';
}

/**
 * scrypt at ln=10 (1 MiB, about a millisecond): the suite makes hundreds of
 * accounts, and at the production cost their hashing alone took minutes of
 * CPU on two cores. Verifying, rehashing and the stored format are the same
 * code at any cost.
 */
export const TEST_PASSWORD_PARAMS = { ln: 10, r: 8, p: 1 } as const;

export async function buildTestApp(
  db: TestDatabase,
  env: Record<string, string> = {},
  options: TestAppOptions = {},
): Promise<TestApp> {
  const config = loadConfig({ ENCLAVE_DATA_DIR: '/nonexistent-enclave-test', ...env }, process.cwd());
  const lines: string[] = [];
  const logger = createLogger('info', lineSink(lines));
  const rateLimits = createRateLimits(db.target, db.appCredentials, logger, config.dbTimeoutMs);
  const audit = testAuditSetup(config);
  const relaySigningKey = generateKeyPairSync('ed25519').privateKey;
  const templates = await loadTemplateCatalog(templateDirs(config));
  const vault = await testVault(db);
  const sessionKey = randomBytes(32).toString('base64url');
  // A refused build (e.g. a production app given test password parameters) leaves no pool open.
  const app = await buildApp({
    config,
    sql: db.app,
    logger,
    migrations: db.migrations,
    sessionKey,
    rateLimits,
    audit,
    relaySigningKey,
    templates,
    vault,
    smtpConfigured: (await loadSmtpUrl(config, env)) !== undefined,
    identityProviders: await loadIdentityProviders(config, env),
    ...((options.passwordCost ?? (config.env === 'production' ? 'production' : 'test')) === 'test'
      ? { passwordParams: TEST_PASSWORD_PARAMS }
      : {}),
  }).catch(async (error: unknown) => {
    await rateLimits.close();
    throw error;
  });
  app.addHook('onClose', () => rateLimits.close());
  // Every response a test receives is checked against the document; a mismatch fails the file when the app closes.
  const conformance =
    options.openApiConformance === false ? { mismatches: () => [] } : checkResponsesAgainstOpenApi(app);
  app.addHook('onClose', async () => {
    const mismatches = conformance.mismatches();
    if (mismatches.length > 0) {
      throw new Error(`responses differ from /openapi.json:\n${mismatches.join('\n')}`);
    }
  });
  return {
    app,
    config,
    logLines: () => [...lines],
    rateLimits,
    sessionKey,
    audit,
    relaySigningKey,
    templates,
    vault,
    openApiMismatches: conformance.mismatches,
  };
}

/** An RFC 9457 problem+json body as the app sends it. */
export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  code: string;
  request_id: string;
  detail?: string;
  errors?: { field: string; message: string }[];
}

/** A test database and app for one suite; see useTestApp(). */
export interface TestAppContext {
  readonly db: TestDatabase;
  readonly testApp: TestApp;
  /**
   * Registers a before hook that runs once the database and app exist. Use it
   * rather than node:test's `before` for setup that needs them: at file level
   * node:test starts every `before` hook at once, so registration order alone
   * does not make the app exist first.
   */
  before(setUp: () => unknown): void;
  /**
   * Registers teardown for something built on the app or database (a worker,
   * further apps or pools). These run in reverse order of registration, before
   * the app is closed and the database dropped.
   */
  after(tearDown: () => unknown): void;
}

/**
 * Registers before/after hooks on the calling suite (or file) that create a
 * test database and build the app on it with `env`, and afterwards close the
 * app and drop the database. Read `db` and `testApp` inside tests and hooks,
 * not while the module loads.
 */
export function useTestApp(env: Record<string, string> = {}, options: TestAppOptions = {}): TestAppContext {
  let db: TestDatabase | undefined;
  let testApp: TestApp | undefined;
  const tearDowns: (() => unknown)[] = [];
  const ready = Promise.withResolvers<void>();
  // Hooks that wait on a failed setup fail with its error; nothing else awaits it.
  ready.promise.catch(() => {});
  before(async () => {
    try {
      db = await createTestDatabase();
      testApp = await buildTestApp(db, env, options);
      ready.resolve();
    } catch (error) {
      ready.reject(error);
      throw error;
    }
  });
  after(async () => {
    try {
      for (const tearDown of tearDowns.reverse()) await tearDown();
    } finally {
      await testApp?.app.close();
      await db?.drop();
    }
  });
  const notYet = (name: string) =>
    new Error(
      `useTestApp(): ${name} was read before the suite's before hook ran; read it inside a test or hook`,
    );
  return {
    get db() {
      if (db === undefined) throw notYet('db');
      return db;
    },
    get testApp() {
      if (testApp === undefined) throw notYet('testApp');
      return testApp;
    },
    before(setUp) {
      before(async () => {
        await ready.promise;
        await setUp();
      });
    },
    after(tearDown) {
      tearDowns.push(tearDown);
    },
  };
}
