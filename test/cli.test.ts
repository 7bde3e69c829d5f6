import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { nodeTooOld } from '../bin/node-version.js';
import { createDeviceCookies } from '../src/accounts/device-cookies.ts';
import { createPasswordPool } from '../src/accounts/password-pool.ts';
import { createAccountsService } from '../src/accounts/service.ts';
import { PLATFORM_TENANT } from '../src/audit/append.ts';
import { connectionUrl } from '../src/db/target.ts';
import { withTenant } from '../src/db/tenant.ts';
import { createRateLimits } from '../src/http/rate-limits.ts';
import { createLogger } from '../src/logger.ts';
import { fileMasterKeyProvider } from '../src/vault/master-keys.ts';
import { createVault } from '../src/vault/service.ts';
import { createdAccount, testClient } from './helpers/accounts.ts';
import { createTenant } from './helpers/audit.ts';
import { createTestDatabase, type TestDatabase, testClusterInfo } from './helpers/database.ts';
import { runProcess } from './helpers/process.ts';
import { requireTool } from './helpers/system-tools.ts';

// The `enclave` command as an operator meets it: run as a separate process
// with nothing in its environment but what each test sets.

const ROOT = path.join(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin', 'enclave.js');

interface Result {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

let dataDir: string;

async function enclave(args: readonly string[], env: Record<string, string> = {}): Promise<Result> {
  return runProcess(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ENCLAVE_DATA_DIR: dataDir, ...env },
  });
}

function lines(text: string): string[] {
  return text.split('\n').filter((line) => line !== '');
}

function assertUsageError(result: Result): void {
  assert.equal(result.code, 2, result.stderr);
  const errors = lines(result.stderr);
  assert.equal(errors.length, 1, `exactly one line on stderr, got:\n${result.stderr}`);
  assert.match(errors[0] ?? '', /^enclave: /);
}

before(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-cli-'));
});
after(() => rm(dataDir, { recursive: true, force: true }));

/**
 * Runs `enclave ARGS` with a module hook that reports, at exit, every module
 * the process loaded: what `--help` costs is what it loads.
 */
async function modulesLoadedBy(args: readonly string[]): Promise<{ result: Result; loaded: string[] }> {
  const hook = `import { registerHooks } from 'node:module';
const loaded = [];
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
process.on('exit', () => process.stderr.write('\\nLOADED ' + JSON.stringify(loaded) + '\\n'));`;
  const result = await runProcess(
    process.execPath,
    ['--import', `data:text/javascript,${encodeURIComponent(hook)}`, BIN, ...args],
    { cwd: ROOT, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ENCLAVE_DATA_DIR: dataDir } },
  );
  const report = /\nLOADED (.*)\n/.exec(result.stderr);
  assert.ok(report?.[1] !== undefined, `the hook reported the loaded modules:\n${result.stderr}`);
  const loaded = (JSON.parse(report[1]) as string[]).filter((url) => url.startsWith('file:'));
  return {
    result: { ...result, stderr: result.stderr.slice(0, report.index) },
    loaded: loaded.map((url) => path.relative(ROOT, new URL(url).pathname)),
  };
}

describe('enclave usage', { concurrency: 4 }, () => {
  test('npm test, enclave and enclave-verify refuse a Node older than 22.18 in one line, from plain JavaScript', () => {
    assert.equal(
      nodeTooOld('npm test', '20.20.2'),
      'npm test: Node.js 22.18 or newer is required (this is v20.20.2)',
    );
    assert.notEqual(nodeTooOld('enclave', '22.17.1'), undefined);
    assert.equal(nodeTooOld('enclave', '22.18.0'), undefined);
    assert.equal(nodeTooOld('enclave', '24.1.0'), undefined);
    const launcher = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    // Node 20 fails on a .ts entry point before any check in it runs.
    assert.equal(launcher.scripts.test, 'node test/launch.js');
  });

  test("--help, a command's --help and a bad argument answer without loading the command modules", async () => {
    for (const args of [['--help'], ['invite', '--help'], ['start', '--bogus'], ['frob']]) {
      const { result, loaded } = await modulesLoadedBy(args);
      assert.ok(result.stdout !== '' || result.stderr !== '', `enclave ${args.join(' ')} answered`);
      assert.ok(loaded.includes('src/cli/main.ts'), loaded.join('\n'));
      const heavy = loaded.filter(
        (file) =>
          file === 'src/main.ts' ||
          file.startsWith('src/db/') ||
          file.startsWith('src/agents/') ||
          file.includes('node_modules/'),
      );
      assert.deepEqual(heavy, [], `enclave ${args.join(' ')} loaded only the command line's own modules`);
    }
  });

  test('--help exits 0 and lists every command', async () => {
    const result = await enclave(['--help']);
    assert.equal(result.code, 0);
    for (const command of ['start', 'worker', 'migrate', 'doctor', 'invite', 'keys']) {
      assert.match(result.stdout, new RegExp(`^  ${command} `, 'm'), `lists ${command}`);
    }
  });

  for (const command of ['start', 'migrate', 'worker', 'doctor', 'invite', 'keys']) {
    test(`${command} --help exits 0 with a usage line`, async () => {
      const result = await enclave([command, '--help']);
      assert.equal(result.code, 0);
      assert.match(result.stdout, new RegExp(`^Usage: enclave ${command}\\b`, 'm'));
      assert.equal(result.stderr, '');
    });
  }

  test('no command exits non-zero and shows the usage', async () => {
    const result = await enclave([]);
    assert.notEqual(result.code, 0);
    assert.match(result.stdout + result.stderr, /Usage: enclave <command>/);
  });

  test('an unknown command exits 2 with one line', async () => {
    assertUsageError(await enclave(['bogus']));
  });

  test('an unknown flag exits 2 with one line', async () => {
    for (const args of [['--bogus'], ['migrate', '--bogus']]) {
      const result = await enclave(args);
      assertUsageError(result);
      assert.match(result.stderr, /^enclave: unknown option '--bogus'\. Run "enclave --help"\.$/m);
    }
  });

  test('bad support arguments exit 2 with one line, before any key or database is touched', async () => {
    for (const args of [
      ['support'],
      ['support', 'bogus'],
      ['support', 'ssh'],
      ['support', 'ssh', 'Not_A_Handle'],
      ['support', 'proxy', 'my-agent', '--', 'id'],
    ]) {
      assertUsageError(await enclave(args));
    }
  });

  test('an extra argument exits 2 with one line', async () => {
    assertUsageError(await enclave(['migrate', 'extra']));
  });

  test('a bad config value exits 1 with one line naming the variable and no stack trace', async () => {
    const result = await enclave(['migrate'], { ENCLAVE_PORT: 'abc' });
    assert.equal(result.code, 1);
    const errors = lines(result.stderr);
    assert.equal(errors.length, 1, `exactly one line on stderr, got:\n${result.stderr}`);
    assert.match(errors[0] ?? '', /^enclave: ENCLAVE_PORT: /);
    assert.doesNotMatch(result.stderr, /\n\s+at /);
  });
});

describe('enclave migrate and doctor against PostgreSQL', () => {
  let db: TestDatabase;
  let env: Record<string, string>;

  before(async () => {
    db = await createTestDatabase({ empty: true });
    const info = testClusterInfo();
    env = {
      DATABASE_URL: connectionUrl(db.target, db.target.admin),
      // The roles are shared by the whole test run: pass the passwords they already have.
      ENCLAVE_DB_OWNER_PASSWORD: info.ownerPassword,
      ENCLAVE_DB_APP_PASSWORD: info.appPassword,
    };
  });
  after(() => db.drop());

  test('migrate applies the migrations once, then finds the database up to date', async () => {
    const first = await enclave(['migrate'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^applied 0001_tenancy$/m);
    const second = await enclave(['migrate'], env);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /^Database is up to date\.$/m);
    assert.doesNotMatch(second.stdout, /^applied /m);
  });

  test('doctor passes on the migrated database (a missing worker or host tool is only a warning)', async () => {
    const result = await enclave(['doctor'], env);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}database +PostgreSQL .* \(external\)/m);
    assert.match(result.stdout, /^ok {4}migrations /m);
    assert.match(result.stdout, /^ok {4}row security /m);
    assert.match(result.stdout, /^ok {4}roles /m);
    assert.match(result.stdout, /^(ok|warn) {2,4}worker /m);
  });

  test('doctor reports bubblewrap and chromium', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap') || !requireTool(t, 'chromium', 'chromium')) return;
    const result = await enclave(['doctor'], env);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}bubblewrap /m);
    assert.match(result.stdout, /^ok {4}chromium /m);
  });

  test('AGT-2: doctor reports whether the sandboxes’ seccomp filter is active', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    if (!requireTool(t, '/usr/bin/python3', 'python3-seccomp', ['-c', 'import seccomp'])) return;
    const result = await enclave(['doctor'], env);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.match(result.stdout, /^ok {4}seccomp +active: every sandbox is denied \d+ syscalls /m);
    assert.match(result.stdout, /^\w+ +sandbox limits .*seccomp: \d+ syscalls denied/m);
  });

  test('doctor fails on an unreachable database and says how to fix it', async () => {
    const result = await enclave(['doctor'], { DATABASE_URL: 'postgres://u:p@127.0.0.1:1/x' });
    assert.equal(result.code, 1);
    const out = lines(result.stdout);
    const failed = out.findIndex((line) => /^fail {2}database /.test(line));
    assert.ok(failed >= 0, result.stdout);
    assert.match(out[failed + 1] ?? '', /^\s+fix: /);
    assert.doesNotMatch(result.stdout + result.stderr, /\n\s+at /);
  });
});

describe('enclave invite', () => {
  let db: TestDatabase;
  let env: Record<string, string>;

  before(async () => {
    // A migrated database, as a running server would leave it.
    db = await createTestDatabase();
    const info = testClusterInfo();
    env = {
      DATABASE_URL: connectionUrl(db.target, db.target.admin),
      // The roles are shared by the whole test run: pass the passwords they already have.
      ENCLAVE_DB_OWNER_PASSWORD: info.ownerPassword,
      ENCLAVE_DB_APP_PASSWORD: info.appPassword,
      ENCLAVE_PUBLIC_URL: 'https://enclave.example',
    };
  });
  after(() => db.drop());

  async function pendingInvite(id: string) {
    const [row] = await db.superuser<
      { kind: string; email: string; token_hash: string; created_by: string | null; expires_at: Date }[]
    >`select kind, email, token_hash, created_by, expires_at from invites
      where id = ${id}::uuid and used_at is null and revoked_at is null`;
    return row;
  }

  async function inviteIdByHash(token: string): Promise<string | undefined> {
    const hash = createHash('sha256').update(token).digest('hex');
    const [row] = await db.superuser<{ id: string }[]>`select id from invites where token_hash = ${hash}`;
    return row?.id;
  }

  function linkToken(stdout: string): string {
    const match = /^ {2}https:\/\/enclave\.example\/signup\?invite=(enc_inv_[0-9A-Za-z]{43})$/m.exec(stdout);
    assert.ok(match?.[1] !== undefined, `a signup link on its own line:\n${stdout}`);
    return match[1];
  }

  test('ACC-1: invite create prints a one-time signup link bound to the address, and a working invite', async () => {
    const started = Date.now();
    const result = await enclave(['invite', 'create', '--email', 'Ada@Example.TEST', '--expires', '2d'], env);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
    assert.match(
      result.stdout,
      /^Signup invite for ada@example\.test \(one use, expires \S+Z \(in 2d\)\):$/m,
    );
    const token = linkToken(result.stdout);
    const id = await inviteIdByHash(token);
    assert.ok(id !== undefined, 'only the hash of the printed token is stored');
    const row = await pendingInvite(id);
    assert.equal(row?.kind, 'tenant');
    assert.equal(row?.email, 'ada@example.test');
    assert.equal(row?.created_by, null);
    const hours = ((row?.expires_at.getTime() ?? 0) - started) / 3600_000;
    assert.ok(hours > 47.9 && hours <= 48.1, `expires in 48 hours, got ${hours}`);

    // The printed link is what a new tenant signs up with.
    const logger = createLogger('silent');
    const rateLimits = createRateLimits(db.target, db.appCredentials, logger);
    const passwords = createPasswordPool({ workers: 1, queue: 0 });
    try {
      const accounts = createAccountsService({
        sql: db.app,
        rateLimits,
        deviceCookies: createDeviceCookies(randomBytes(32).toString('base64url')),
        passwords,
      });
      const { user } = createdAccount(
        await accounts.signup(
          { invite: token, email: 'ada@example.test', username: 'ada', password: 'a long enough password' },
          testClient(),
        ),
      );
      assert.equal(user.role, 'owner');
      assert.equal(user.is_operator, false);
    } finally {
      await rateLimits.close();
      await passwords.close();
    }
    assert.equal(await pendingInvite(id), undefined, 'used');
  });

  test('invite create defaults to a 7-day expiry', async () => {
    const started = Date.now();
    const result = await enclave(['invite', 'create', '--email', 'grace@example.test'], env);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /\(in 7d\)/);
    const id = await inviteIdByHash(linkToken(result.stdout));
    const row = await pendingInvite(id ?? '');
    const days = ((row?.expires_at.getTime() ?? 0) - started) / 86400_000;
    assert.ok(days > 6.99 && days <= 7.01, `expires in 7 days, got ${days}`);
  });

  test('invite list shows pending signup invites; invite revoke removes one, and revoking it again is an error', async () => {
    const created = await enclave(
      ['invite', 'create', '--email', 'linus@example.test', '--expires', '90m'],
      env,
    );
    assert.equal(created.code, 0, created.stderr);
    const token = linkToken(created.stdout);
    const id = (await inviteIdByHash(token)) ?? '';

    const listed = await enclave(['invite', 'list'], env);
    assert.equal(listed.code, 0, listed.stderr);
    const line = lines(listed.stdout).find((l) => l.startsWith(id));
    assert.ok(line !== undefined, listed.stdout);
    assert.match(line, /\btenant\b.*\blinus@example\.test\b.*\d{4}-\d\d-\d\dT/);
    assert.ok(!listed.stdout.includes(token), 'the list never shows a token');
    assert.ok(
      !lines(listed.stdout).some((l) => l.includes('ada@example.test')),
      'used invites are not pending',
    );

    const revoked = await enclave(['invite', 'revoke', id], env);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, new RegExp(`^Revoked invite ${id}\\.$`, 'm'));
    assert.equal(await pendingInvite(id), undefined);
    const relisted = await enclave(['invite', 'list'], env);
    assert.ok(!relisted.stdout.includes(id));

    for (const missing of [id, '00000000-0000-4000-8000-000000000000']) {
      const again = await enclave(['invite', 'revoke', missing], env);
      assert.equal(again.code, 1);
      assert.equal(lines(again.stderr).length, 1, again.stderr);
      assert.match(again.stderr, /^enclave: no pending signup invite with id /);
    }
  });

  test("AUD-1: invite create and revoke from the console are recorded in the platform's chain by operator:cli", async () => {
    const created = await enclave(['invite', 'create', '--email', 'audited@example.test'], env);
    assert.equal(created.code, 0, created.stderr);
    const token = linkToken(created.stdout);
    const id = (await inviteIdByHash(token)) ?? '';
    assert.equal((await enclave(['invite', 'revoke', id], env)).code, 0);
    const events = await db.superuser<
      { tenant_id: string; actor: string; action: string; data: unknown; canonical: string }[]
    >`
      select tenant_id, actor, action, data, canonical from enclave.audit_events
      where target = ${`invite:${id}`} order by seq`;
    assert.deepEqual(
      events.map(({ tenant_id, actor, action }) => ({ tenant_id, actor, action })),
      [
        { tenant_id: PLATFORM_TENANT, actor: 'operator:cli', action: 'invite.created' },
        { tenant_id: PLATFORM_TENANT, actor: 'operator:cli', action: 'invite.revoked' },
      ],
    );
    assert.deepEqual(events[1]?.data, { invite_id: id, kind: 'tenant' });
    assert.ok(!events.some((event) => event.canonical.includes(token)), 'the invite token is in no event');
  });

  test('invite revoke does not touch a tenant member invite', async () => {
    const [tenant] = await db.superuser<{ id: string }[]>`
      insert into tenants (name) values ('cli-tenant') returning id`;
    const [member] = await db.superuser<{ id: string }[]>`
      insert into invites (kind, tenant_id, email, token_hash, expires_at)
      values ('member', ${tenant?.id ?? ''}::uuid, 'member@example.test', ${'a'.repeat(64)}, now() + interval '1 day')
      returning id`;
    const listed = await enclave(['invite', 'list'], env);
    assert.ok(!listed.stdout.includes(member?.id ?? 'missing'));
    const result = await enclave(['invite', 'revoke', member?.id ?? ''], env);
    assert.equal(result.code, 1);
    const [row] = await db.superuser<{ revoked_at: Date | null }[]>`
      select revoked_at from invites where id = ${member?.id ?? ''}::uuid`;
    assert.equal(row?.revoked_at, null);
  });

  test('bad invite arguments exit 2 with one line and create nothing', async () => {
    const [before] = await db.superuser<{ n: number }[]>`select count(*)::int as n from invites`;
    // The full matrix of argument checks is in src/cli/invite.test.ts; these go through the process.
    const bad: { args: string[]; says: RegExp }[] = [
      { args: ['invite', 'create'], says: /needs --email/ },
      { args: ['invite', 'create', '--email'], says: /--email/ },
      { args: ['invite', 'create', '--email', 'not-an-address'], says: /--email is not an email address/ },
      { args: ['invite', 'create', '--email', 'a@example.test', '--expires', '91d'], says: /1m to 90d/ },
      { args: ['invite', 'revoke', 'not-a-uuid'], says: /is not an invite ID/ },
      { args: ['migrate', '--email', 'a@example.test'], says: /options of "invite create"/ },
    ];
    // Independent processes that never reach the database: run them side by side.
    const results = await Promise.all(bad.map(({ args }) => enclave(args, env)));
    for (const [i, { args, says }] of bad.entries()) {
      const result = results[i];
      assert.ok(result !== undefined);
      assertUsageError(result);
      assert.match(result.stderr, says, args.join(' '));
    }
    const [after] = await db.superuser<{ n: number }[]>`select count(*)::int as n from invites`;
    assert.equal(after?.n, before?.n);
  });

  test('--expires accepts the bounds 1m and 90d', async () => {
    for (const [expires, shown] of [
      ['1m', '1m'],
      ['90d', '90d'],
      ['36h', '36h'],
    ] as const) {
      const result = await enclave(
        ['invite', 'create', '--email', 'bounds@example.test', '--expires', expires],
        env,
      );
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, new RegExp(`\\(in ${shown}\\)`));
    }
  });
});

describe('enclave keys', () => {
  let db: TestDatabase;
  let env: Record<string, string>;
  let keyFile: string;

  before(async () => {
    db = await createTestDatabase();
    const info = testClusterInfo();
    env = {
      DATABASE_URL: connectionUrl(db.target, db.target.admin),
      ENCLAVE_DB_OWNER_PASSWORD: info.ownerPassword,
      ENCLAVE_DB_APP_PASSWORD: info.appPassword,
      // A data dir of its own: its development key file is this suite's master key.
      ENCLAVE_DATA_DIR: await mkdtemp(path.join(tmpdir(), 'enclave-keys-')),
    };
    keyFile = path.join(env.ENCLAVE_DATA_DIR ?? '', 'secrets', 'master-keys');
  });
  after(async () => {
    await db.drop();
    await rm(env.ENCLAVE_DATA_DIR ?? '', { recursive: true, force: true });
  });

  const masterVersions = async () =>
    (await db.superuser<{ version: number }[]>`select version from vault_master_keys order by version`).map(
      (row) => row.version,
    );

  test('VLT-6: keys rotate-master and rotate-tenant rotate every key while the credentials stay readable, and are audited', async () => {
    const first = await enclave(['keys', 'rotate-master'], env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^Master key rotated to version 2: 0 data keys of 0 tenants re-wrapped\.$/m);
    assert.deepEqual(await masterVersions(), [2]);

    // A tenant with a credential, written as a server would, under the same key file.
    const vault = createVault({ provider: fileMasterKeyProvider(keyFile, 'the suite key file') });
    const tenantId = await createTenant(db);
    const agentId = await withTenant(db.app, tenantId, async (tx) => {
      const [agent] = await tx<{ id: string }[]>`
        insert into agents (tenant_id, handle, name, template_id)
        values (${tenantId}::uuid, 'keys-cli-agent', 'Keys', 'echo') returning id`;
      await vault.putCredential(
        tx,
        { tenantId, agentId: agent?.id ?? '', name: 'echo_token' },
        'a credential value 1234',
      );
      return agent?.id ?? '';
    });
    const read = () =>
      withTenant(db.app, tenantId, (tx) =>
        createVault({ provider: fileMasterKeyProvider(keyFile, 'a fresh reader') }).lendCredential(
          tx,
          { tenantId, agentId, name: 'echo_token' },
          (value) => value.toString('utf8'),
        ),
      );

    const tenant = await enclave(['keys', 'rotate-tenant', tenantId.toUpperCase()], env);
    assert.equal(tenant.code, 0, tenant.stderr);
    assert.match(
      tenant.stdout,
      /rotated from version 1 to 2: 1 credentials and 0 TOTP secrets re-encrypted\.$/m,
    );
    assert.equal(await read(), 'a credential value 1234');

    const second = await enclave(['keys', 'rotate-master'], env);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /^Master key rotated to version 3: 1 data keys of 1 tenants re-wrapped\.$/m);
    assert.match(second.stdout, /^Retired version\(s\) 2\.$/m);
    assert.deepEqual(await masterVersions(), [3]);
    assert.equal(await read(), 'a credential value 1234');

    const events = await db.superuser<{ action: string; actor: string }[]>`
      select action, actor from audit_events where action like 'vault.%' order by action, seq`;
    assert.deepEqual(
      [...events],
      [
        { action: 'vault.data_key_rotated', actor: 'operator:cli' },
        { action: 'vault.master_key_rotated', actor: 'operator:cli' },
        { action: 'vault.master_key_rotated', actor: 'operator:cli' },
      ],
    );
  });

  test('VLT-6: a wrong or missing master key stops the command (and start) with one clear line and changes nothing', async () => {
    await enclave(['keys', 'rotate-master'], env); // a database with a registered version
    const before = await masterVersions();
    const [current] = before.slice(-1);
    const other = Buffer.alloc(32, 7).toString('base64');
    const cases = [
      { key: `${current}:${other}`, says: /is not the key this database's data keys are wrapped with/ },
      {
        key: `999:${other}`,
        says: new RegExp(
          `version ${current}, which wraps data keys in this database, is not in ENCLAVE_MASTER_KEY`,
        ),
      },
      { key: 'not a key', says: /^enclave: ENCLAVE_MASTER_KEY: entry 1 is not/m },
    ];
    for (const { key, says } of cases) {
      for (const args of [['keys', 'rotate-master'], ['start']]) {
        const result = await enclave(args, { ...env, ENCLAVE_MASTER_KEY: key, ENCLAVE_PORT: '1' });
        assert.equal(result.code, 1, `${args.join(' ')}: ${result.stdout}${result.stderr}`);
        assert.match(result.stderr, says);
        assert.equal(lines(result.stderr).length, 1, result.stderr);
        assert.ok(!result.stderr.includes(other), 'the key text is not echoed');
      }
    }
    assert.deepEqual(await masterVersions(), before, 'nothing was registered or retired');
    const doctor = await enclave(['doctor'], { ...env, ENCLAVE_MASTER_KEY: `${current}:${other}` });
    assert.equal(doctor.code, 1, doctor.stdout);
    assert.match(
      doctor.stdout,
      /^fail {2}master key +master key version \d+ in ENCLAVE_MASTER_KEY is not the key/m,
    );
    const healthy = await enclave(['doctor'], env);
    assert.match(healthy.stdout, /^ok {4}master key +opens the data keys of this database \(version \d+\)$/m);
  });

  test('bad keys arguments exit 2 with one line; an unknown tenant exits 1', async () => {
    for (const args of [
      ['keys'],
      ['keys', 'rotate'],
      ['keys', 'rotate-master', 'extra'],
      ['keys', 'rotate-tenant'],
      ['keys', 'rotate-tenant', 'not-a-uuid'],
      ['keys', 'rotate-tenant', '00000000-0000-4000-8000-000000000001', 'extra'],
    ]) {
      assertUsageError(await enclave(args, env));
    }
    const unknown = await enclave(['keys', 'rotate-tenant', '00000000-0000-4000-8000-000000000001'], env);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^enclave: no tenant has the id /);
  });
});
