import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Config, ConfigError, type Env, loadConfig } from './config.ts';
import { loadOperatorSecret } from './operator-secrets/secrets.ts';

// Config is parsed once at boot: a bad value stops start-up with one line
// naming the variable, and a value that may hold a secret is never echoed.

const CWD = '/srv/enclave';
const PASSWORD = 'hunter2-secret';

function configError(env: Env, variable: string): ConfigError {
  let caught: unknown;
  try {
    loadConfig(env, CWD);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError for ${JSON.stringify(env)}`);
  assert.equal(caught.code, 'config_invalid');
  assert.equal(caught.variable, variable);
  assert.ok(
    caught.message.startsWith(`${variable}:`),
    `message should start with ${variable}: got "${caught.message}"`,
  );
  return caught;
}

describe('loadConfig', () => {
  test('with no variables set, every setting has its documented default', () => {
    const config = loadConfig({}, CWD);
    assert.deepEqual(
      { ...config },
      {
        env: 'development',
        host: '127.0.0.1',
        port: 3000,
        publicUrl: 'http://127.0.0.1:3000',
        dataDir: path.join(CWD, '.enclave'),
        databaseUrl: undefined,
        logLevel: 'info',
        workerConcurrency: 4,
        dbTimeoutMs: 5000,
        trustProxy: false,
        operatorEmail: undefined,
        mailFrom: 'Enclave <no-reply@127.0.0.1>',
        securityContact: undefined,
        postureIntervalMinutes: 60,
        checkpointDelaySeconds: 10,
        deprecations: [],
        checkpointDir: path.join(CWD, '.enclave', 'checkpoints'),
        auditArchiveDir: path.join(CWD, '.enclave', 'audit-archive'),
        auditHotDays: 90,
        auditColdMonths: 24,
        templatesDir: undefined,
        instancesDir: path.join(CWD, '.enclave', 'instances'),
        agentsDomain: 'agents.localhost',
        egressAllow: [],
        callbackAllow: [],
        unenforcedLimits: [],
        passwordWorkers: Math.min(availableParallelism(), 64),
        passwordQueue: 8 * Math.min(availableParallelism(), 64),
        gatewayUpstreams: {
          anthropic: 'https://api.anthropic.com',
          openai: 'https://api.openai.com',
          google: 'https://generativelanguage.googleapis.com',
          xai: 'https://api.x.ai',
        },
        gatewayAutoModels: { anthropic: 'claude-sonnet-4-5', openai: 'gpt-4.1-mini' },
        gatewayTimeoutMs: 600_000,
      },
    );
  });

  test('ENCLAVE_PASSWORD_WORKERS is 1 to 64 (one per core by default); ENCLAVE_PASSWORD_QUEUE is 0 to 10000 (8 per worker by default)', () => {
    const config = loadConfig({ ENCLAVE_PASSWORD_WORKERS: '3' }, CWD);
    assert.deepEqual([config.passwordWorkers, config.passwordQueue], [3, 24]);
    const none = loadConfig({ ENCLAVE_PASSWORD_WORKERS: '1', ENCLAVE_PASSWORD_QUEUE: '0' }, CWD);
    assert.deepEqual([none.passwordWorkers, none.passwordQueue], [1, 0]);
    for (const bad of ['0', '65', '-1', '2.5', 'many']) {
      configError({ ENCLAVE_PASSWORD_WORKERS: bad }, 'ENCLAVE_PASSWORD_WORKERS');
    }
    for (const bad of ['10001', '-1', 'lots']) {
      configError({ ENCLAVE_PASSWORD_QUEUE: bad }, 'ENCLAVE_PASSWORD_QUEUE');
    }
  });

  test('OPS-5: ENCLAVE_POSTURE_INTERVAL_MINUTES is 60 by default and takes minutes dividing an hour or a day (5 to 1440); anything else stops start-up naming the variable', () => {
    for (const minutes of [5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440]) {
      const config = loadConfig({ ENCLAVE_POSTURE_INTERVAL_MINUTES: String(minutes) }, CWD);
      assert.equal(config.postureIntervalMinutes, minutes);
    }
    for (const bad of ['0', '1', '4', '7', '45', '90', '1441', '2880', '-5', '1.5', '60m', 'hourly']) {
      const error = configError(
        { ENCLAVE_POSTURE_INTERVAL_MINUTES: bad },
        'ENCLAVE_POSTURE_INTERVAL_MINUTES',
      );
      assert.match(error.message, /5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440/);
    }
  });

  test('AUD-4, AUD-7: checkpoints follow a head move within ENCLAVE_CHECKPOINT_DELAY seconds (10 by default, 1 to 3600), and the audit windows cannot go below 90 days and 24 months', () => {
    const config = loadConfig(
      {
        ENCLAVE_CHECKPOINT_DELAY: '3',
        ENCLAVE_CHECKPOINT_DIR: 'published',
        ENCLAVE_AUDIT_ARCHIVE_DIR: '/archive',
        ENCLAVE_AUDIT_HOT_DAYS: '180',
        ENCLAVE_AUDIT_COLD_MONTHS: '36',
      },
      CWD,
    );
    assert.equal(config.checkpointDelaySeconds, 3);
    assert.deepEqual(config.deprecations, []);
    assert.equal(config.checkpointDir, '/srv/enclave/published');
    assert.equal(config.auditArchiveDir, '/archive');
    assert.equal(config.auditHotDays, 180);
    assert.equal(config.auditColdMonths, 36);
    for (const delay of ['0', '3601', '1.5', '10s', '-5']) {
      configError({ ENCLAVE_CHECKPOINT_DELAY: delay }, 'ENCLAVE_CHECKPOINT_DELAY');
    }
    configError({ ENCLAVE_AUDIT_HOT_DAYS: '30' }, 'ENCLAVE_AUDIT_HOT_DAYS');
    configError({ ENCLAVE_AUDIT_COLD_MONTHS: '12' }, 'ENCLAVE_AUDIT_COLD_MONTHS');
  });

  test('AUD-4: the old ENCLAVE_CHECKPOINT_INTERVAL (minutes) is still read for one release, with a deprecation line; ENCLAVE_CHECKPOINT_DELAY wins over it', () => {
    const old = loadConfig({ ENCLAVE_CHECKPOINT_INTERVAL: '15' }, CWD);
    assert.equal(old.checkpointDelaySeconds, 900);
    assert.match(
      old.deprecations.join('\n'),
      /ENCLAVE_CHECKPOINT_INTERVAL is deprecated .*ENCLAVE_CHECKPOINT_DELAY=900/,
    );
    const both = loadConfig({ ENCLAVE_CHECKPOINT_INTERVAL: '15', ENCLAVE_CHECKPOINT_DELAY: '5' }, CWD);
    assert.equal(both.checkpointDelaySeconds, 5);
    assert.match(both.deprecations.join('\n'), /ignored because ENCLAVE_CHECKPOINT_DELAY is set/);
    for (const interval of ['0', '7', '90', '1h', '-5']) {
      configError({ ENCLAVE_CHECKPOINT_INTERVAL: interval }, 'ENCLAVE_CHECKPOINT_INTERVAL');
    }
  });

  test('a relative ENCLAVE_DATA_DIR is resolved against the working directory', () => {
    assert.equal(loadConfig({ ENCLAVE_DATA_DIR: 'data/here' }, CWD).dataDir, '/srv/enclave/data/here');
    assert.equal(loadConfig({ ENCLAVE_DATA_DIR: '/var/lib/enclave' }, CWD).dataDir, '/var/lib/enclave');
  });

  test('ENCLAVE_AGENTS_DOMAIN is a domain of two labels or more; ENCLAVE_EGRESS_ALLOW is a list of IP ranges', () => {
    assert.equal(
      loadConfig({ ENCLAVE_AGENTS_DOMAIN: 'Agents.Example.COM' }, CWD).agentsDomain,
      'agents.example.com',
    );
    for (const bad of [
      'localhost',
      'a..b',
      '-a.b',
      'a.b/c',
      'https://a.b',
      'a_b.c',
      `${'x'.repeat(64)}.com`,
    ]) {
      configError({ ENCLAVE_AGENTS_DOMAIN: bad }, 'ENCLAVE_AGENTS_DOMAIN');
    }
    assert.deepEqual(
      loadConfig({ ENCLAVE_EGRESS_ALLOW: '10.1.0.0/16, 192.168.1.5,fd00::/8' }, CWD).egressAllow,
      ['10.1.0.0/16', '192.168.1.5', 'fd00::/8'],
    );
    for (const bad of ['10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '::/129', '10.0.0.1,,10.0.0.2']) {
      configError({ ENCLAVE_EGRESS_ALLOW: bad }, 'ENCLAVE_EGRESS_ALLOW');
    }
  });

  test('RLY-12: ENCLAVE_CALLBACK_ALLOW is a list of IP ranges of its own, apart from ENCLAVE_EGRESS_ALLOW', () => {
    const config = loadConfig({ ENCLAVE_CALLBACK_ALLOW: '127.0.0.1/32, fd00::/8' }, CWD);
    assert.deepEqual(config.callbackAllow, ['127.0.0.1/32', 'fd00::/8']);
    assert.deepEqual(config.egressAllow, []);
    configError({ ENCLAVE_CALLBACK_ALLOW: 'example.com' }, 'ENCLAVE_CALLBACK_ALLOW');
  });

  test('AGT-6: ENCLAVE_UNENFORCED_LIMITS names the limits an operator lets go unenforced, and nothing else', () => {
    assert.deepEqual(loadConfig({ ENCLAVE_UNENFORCED_LIMITS: 'CPU, volume,cpu' }, CWD).unenforcedLimits, [
      'cpu',
      'volume',
    ]);
    for (const bad of ['memory', 'cpu,,volume', 'all', 'cpu;volume']) {
      configError({ ENCLAVE_UNENFORCED_LIMITS: bad }, 'ENCLAVE_UNENFORCED_LIMITS');
    }
  });

  test('a relative ENCLAVE_TEMPLATES_DIR is resolved against the working directory; a NUL byte is refused', () => {
    const templatesDir = (value: string) => loadConfig({ ENCLAVE_TEMPLATES_DIR: value }, CWD).templatesDir;
    assert.equal(templatesDir('my-templates'), '/srv/enclave/my-templates');
    assert.equal(templatesDir('/etc/enclave/templates'), '/etc/enclave/templates');
    assert.equal(templatesDir('  '), undefined);
    configError({ ENCLAVE_TEMPLATES_DIR: 'bad\0dir' }, 'ENCLAVE_TEMPLATES_DIR');
  });

  test('valid values are parsed into their typed fields', () => {
    const databaseUrl = `postgres://admin:${PASSWORD}@db.internal:5433/enclave`;
    const config = loadConfig(
      {
        ENCLAVE_ENV: 'production',
        ENCLAVE_HOST: '0.0.0.0',
        ENCLAVE_PORT: '8080',
        ENCLAVE_PUBLIC_URL: 'https://enclave.example/',
        DATABASE_URL: databaseUrl,
        ENCLAVE_LOG_LEVEL: 'warn',
        ENCLAVE_WORKER_CONCURRENCY: '8',
        ENCLAVE_TRUST_PROXY: '2',
        ENCLAVE_OPERATOR_EMAIL: ' Ops@Enclave.Example ',
        ENCLAVE_MAIL_FROM: 'Enclave Ops <ops@enclave.example>',
      },
      CWD,
    );
    assert.equal(config.env, 'production');
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.port, 8080);
    assert.equal(config.publicUrl, 'https://enclave.example');
    assert.equal(config.databaseUrl, databaseUrl);
    assert.equal(config.logLevel, 'warn');
    assert.equal(config.workerConcurrency, 8);
    assert.equal(config.trustProxy, 2);
    assert.equal(config.operatorEmail, 'ops@enclave.example');
    assert.equal(config.mailFrom, 'Enclave Ops <ops@enclave.example>');
  });

  test('the returned config is frozen', () => {
    const config = loadConfig({}, CWD);
    assert.ok(Object.isFrozen(config));
    assert.throws(() => {
      (config as { port: number }).port = 1;
    }, TypeError);
    assert.equal(config.port, 3000);
  });

  test('ENCLAVE_ENV must be development or production', () => {
    configError({ ENCLAVE_ENV: 'staging' }, 'ENCLAVE_ENV');
  });

  test('ENCLAVE_PORT must be an integer from 1 to 65535', () => {
    for (const port of ['abc', '0', '70000', '-1', '80.5']) {
      configError({ ENCLAVE_PORT: port }, 'ENCLAVE_PORT');
    }
  });

  test('ENCLAVE_HOST must be a bare hostname or IP address', () => {
    configError({ ENCLAVE_HOST: 'http://x' }, 'ENCLAVE_HOST');
    configError({ ENCLAVE_HOST: 'example.com/path' }, 'ENCLAVE_HOST');
  });

  test('ENCLAVE_PUBLIC_URL must be an http(s) origin with no path or credentials', () => {
    configError({ ENCLAVE_PUBLIC_URL: 'not a url' }, 'ENCLAVE_PUBLIC_URL');
    configError({ ENCLAVE_PUBLIC_URL: 'ftp://enclave.example' }, 'ENCLAVE_PUBLIC_URL');
    configError({ ENCLAVE_PUBLIC_URL: 'https://enclave.example/app' }, 'ENCLAVE_PUBLIC_URL');
    configError({ ENCLAVE_PUBLIC_URL: 'https://enclave.example/?x=1' }, 'ENCLAVE_PUBLIC_URL');
    const withCredentials = configError(
      { ENCLAVE_PUBLIC_URL: `https://user:${PASSWORD}@enclave.example` },
      'ENCLAVE_PUBLIC_URL',
    );
    assert.ok(!withCredentials.message.includes(PASSWORD));
  });

  test('ENCLAVE_PUBLIC_URL must use https in production', () => {
    configError(
      { ENCLAVE_ENV: 'production', ENCLAVE_PUBLIC_URL: 'http://enclave.example' },
      'ENCLAVE_PUBLIC_URL',
    );
    // The default (http://host:port) is not acceptable in production either.
    configError({ ENCLAVE_ENV: 'production' }, 'ENCLAVE_PUBLIC_URL');
  });

  test('DATABASE_URL must be a postgres URL naming a database, and its errors never contain the password', () => {
    const bad = [
      `postgres://admin:${PASSWORD}@db.internal:notaport/enclave`,
      `${PASSWORD}`,
      `mysql://admin:${PASSWORD}@db.internal/enclave`,
      `postgres://admin:${PASSWORD}@db.internal:5432`,
      `postgres://admin:${PASSWORD}@db.internal:5432/`,
    ];
    for (const databaseUrl of bad) {
      const error = configError({ DATABASE_URL: databaseUrl }, 'DATABASE_URL');
      assert.ok(!error.message.includes(PASSWORD), `message leaks the password: ${error.message}`);
      assert.ok(!String(error.stack).includes(PASSWORD), 'stack leaks the password');
    }
  });

  test('ENCLAVE_LOG_LEVEL must be a pino level', () => {
    configError({ ENCLAVE_LOG_LEVEL: 'loud' }, 'ENCLAVE_LOG_LEVEL');
  });

  test('ENCLAVE_WORKER_CONCURRENCY must be at least 1', () => {
    configError({ ENCLAVE_WORKER_CONCURRENCY: '0' }, 'ENCLAVE_WORKER_CONCURRENCY');
  });

  test('ENCLAVE_DB_TIMEOUT_MS bounds database waits: 5000 by default, 1000 to 600000 milliseconds', () => {
    assert.equal(loadConfig({ ENCLAVE_DB_TIMEOUT_MS: '1000' }, CWD).dbTimeoutMs, 1000);
    for (const value of ['999', '600001', '5s', '-1', '2.5']) {
      configError({ ENCLAVE_DB_TIMEOUT_MS: value }, 'ENCLAVE_DB_TIMEOUT_MS');
    }
  });

  test('AGT-7: ENCLAVE_GATEWAY_<PROVIDER>_URL is an http(s) base URL with no credentials, query or fragment; the auto models must be the provider’s', () => {
    const config = loadConfig(
      {
        ENCLAVE_GATEWAY_ANTHROPIC_URL: 'http://127.0.0.1:9999/',
        ENCLAVE_GATEWAY_OPENAI_MODEL: 'gpt-5',
        ENCLAVE_GATEWAY_TIMEOUT_MS: '1000',
      },
      CWD,
    );
    assert.equal(config.gatewayUpstreams.anthropic, 'http://127.0.0.1:9999');
    assert.equal(config.gatewayAutoModels.openai, 'gpt-5');
    assert.equal(config.gatewayTimeoutMs, 1000);
    for (const value of [
      'ftp://x.test',
      'https://user:pw@x.test',
      'https://x.test/?a=1',
      'https://x.test/#f',
      'not a url',
    ]) {
      configError({ ENCLAVE_GATEWAY_XAI_URL: value }, 'ENCLAVE_GATEWAY_XAI_URL');
    }
    configError({ ENCLAVE_GATEWAY_ANTHROPIC_MODEL: 'gpt-4.1' }, 'ENCLAVE_GATEWAY_ANTHROPIC_MODEL');
    for (const value of ['999', '3600001', '1m'])
      configError({ ENCLAVE_GATEWAY_TIMEOUT_MS: value }, 'ENCLAVE_GATEWAY_TIMEOUT_MS');
  });

  test('ENCLAVE_TRUST_PROXY is a hop count from 1 to 10 or a list of proxy addresses and CIDR ranges', () => {
    assert.equal(loadConfig({ ENCLAVE_TRUST_PROXY: '1' }, CWD).trustProxy, 1);
    assert.equal(loadConfig({ ENCLAVE_TRUST_PROXY: '10' }, CWD).trustProxy, 10);
    assert.deepEqual(
      loadConfig({ ENCLAVE_TRUST_PROXY: '10.0.0.1, 192.168.0.0/16,fd00::/8' }, CWD).trustProxy,
      ['10.0.0.1', '192.168.0.0/16', 'fd00::/8'],
    );
    for (const bad of [
      '0',
      '11',
      'true',
      'proxy.internal',
      '10.0.0.1/33',
      '10.0.0.0/8/1',
      '10.0.0.1,',
      'fd00::/129',
    ]) {
      configError({ ENCLAVE_TRUST_PROXY: bad }, 'ENCLAVE_TRUST_PROXY');
    }
  });

  test('ENCLAVE_OPERATOR_EMAIL must be an email address, and is stored lower-cased', () => {
    assert.equal(
      loadConfig({ ENCLAVE_OPERATOR_EMAIL: 'Root@Example.COM' }, CWD).operatorEmail,
      'root@example.com',
    );
    for (const bad of ['root', 'root@localhost', 'a b@example.com', '<root@example.com>']) {
      configError({ ENCLAVE_OPERATOR_EMAIL: bad }, 'ENCLAVE_OPERATOR_EMAIL');
    }
  });

  test('ENCLAVE_MAIL_FROM is an address or "Name <address>", and a CR or LF (header injection) is refused', () => {
    assert.equal(loadConfig({ ENCLAVE_MAIL_FROM: 'ops@example.com' }, CWD).mailFrom, 'ops@example.com');
    assert.equal(
      loadConfig({ ENCLAVE_PUBLIC_URL: 'https://enclave.example' }, CWD).mailFrom,
      'Enclave <no-reply@enclave.example>',
    );
    for (const bad of [
      'not an address',
      'Ops <not-an-address>',
      'Ops <ops@example.com>\r\nBcc: victim@example.com',
      'Ops\r\nBcc: victim@example.com <ops@example.com>',
      'Ops\n <ops@example.com>',
    ]) {
      configError({ ENCLAVE_MAIL_FROM: bad }, 'ENCLAVE_MAIL_FROM');
    }
  });
});

describe('loadOperatorSecret', () => {
  let dir: string;
  let development: Config;
  let production: Config;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'enclave-config-test-'));
    development = loadConfig({ ENCLAVE_DATA_DIR: path.join(dir, 'data') }, dir);
    production = loadConfig(
      {
        ENCLAVE_ENV: 'production',
        ENCLAVE_PUBLIC_URL: 'https://enclave.example',
        ENCLAVE_DATA_DIR: path.join(dir, 'prod-data'),
      },
      dir,
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('production with no secret set refuses to start, naming the variable', async () => {
    await assert.rejects(
      loadOperatorSecret(production, {}, 'db_app_password'),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.variable === 'ENCLAVE_DB_APP_PASSWORD' &&
        error.message.startsWith('ENCLAVE_DB_APP_PASSWORD'),
    );
  });

  test('a secret from the environment or from a _FILE is used as given', async () => {
    const direct = 'a-direct-secret-of-enough-length';
    assert.equal(
      await loadOperatorSecret(production, { ENCLAVE_DB_APP_PASSWORD: direct }, 'db_app_password'),
      direct,
    );
    const file = path.join(dir, 'app-password');
    await writeFile(file, 'a-secret-from-a-file-0123456789\n');
    assert.equal(
      await loadOperatorSecret(production, { ENCLAVE_DB_APP_PASSWORD_FILE: file }, 'db_app_password'),
      'a-secret-from-a-file-0123456789',
    );
  });

  test('setting both the variable and its _FILE is an error', async () => {
    const file = path.join(dir, 'both');
    await writeFile(file, 'a-secret-from-a-file-0123456789\n');
    await assert.rejects(
      loadOperatorSecret(
        development,
        { ENCLAVE_DB_APP_PASSWORD: 'a-direct-secret-of-enough-length', ENCLAVE_DB_APP_PASSWORD_FILE: file },
        'db_app_password',
      ),
      (error: unknown) => error instanceof ConfigError && error.variable === 'ENCLAVE_DB_APP_PASSWORD',
    );
  });

  test('an unreadable _FILE is an error naming the file', async () => {
    const missing = path.join(dir, 'no-such-secret-file');
    await assert.rejects(
      loadOperatorSecret(development, { ENCLAVE_DB_APP_PASSWORD_FILE: missing }, 'db_app_password'),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.message.startsWith('ENCLAVE_DB_APP_PASSWORD_FILE') &&
        error.message.includes(missing),
    );
  });

  test('a secret shorter than 16 characters is refused, from the environment or a file', async () => {
    await assert.rejects(
      loadOperatorSecret(development, { ENCLAVE_DB_APP_PASSWORD: 'short' }, 'db_app_password'),
      (error: unknown) => error instanceof ConfigError && error.variable === 'ENCLAVE_DB_APP_PASSWORD',
    );
    const file = path.join(dir, 'short-secret');
    await writeFile(file, 'short\n');
    await assert.rejects(
      loadOperatorSecret(development, { ENCLAVE_DB_APP_PASSWORD_FILE: file }, 'db_app_password'),
      (error: unknown) => error instanceof ConfigError && error.variable === 'ENCLAVE_DB_APP_PASSWORD_FILE',
    );
  });

  test('development generates the secret once, in a 0600 file under the data dir, and reuses it', async () => {
    const first = await loadOperatorSecret(development, {}, 'db_app_password');
    assert.ok(first.length >= 32);
    const file = path.join(development.dataDir, 'secrets', 'db_app_password');
    assert.equal((await readFile(file, 'utf8')).trim(), first);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(path.dirname(file))).mode & 0o077, 0);
    const second = await loadOperatorSecret(development, {}, 'db_app_password');
    assert.equal(second, first);
    const other = await loadOperatorSecret(development, {}, 'db_owner_password');
    assert.notEqual(other, first);
  });
});
