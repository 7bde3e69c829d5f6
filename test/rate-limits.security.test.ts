import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createAccountsService } from '../src/accounts/service.ts';
import { accountKey, BUCKETS, type Bucket, RateLimitedError } from '../src/http/rate-limits.ts';
import {
  createAccount,
  randomClientIp,
  type TestAccount,
  testAccountsService,
  testClient,
  uniqueName,
} from './helpers/accounts.ts';
import { buildTestApp, type TestApp } from './helpers/app.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

// Attack: an attacker guesses passwords online — many tries on one account
// from many addresses, many accounts from one address, spread over several
// server processes, or with a forged X-Forwarded-For to look like many clients.

let db: TestDatabase;
let first: TestApp;
let second: TestApp;

before(async () => {
  db = await createTestDatabase();
  // Two server processes on one database.
  first = await buildTestApp(db);
  second = await buildTestApp(db);
});
after(async () => {
  await first.app.close();
  await second.app.close();
  await db.drop();
});

const WRONG = 'definitely not the password';
/** Real attempts per test; the rest of a bucket is spent directly in the shared store, to save scrypt time. */
const REAL_ATTEMPTS = 4;

/** Spends all but `left` points of a bucket through the first process's store. */
async function drain(bucket: Bucket, key: string, left: number): Promise<void> {
  for (let i = 0; i < BUCKETS[bucket].points - left; i += 1) await first.rateLimits.consume(bucket, key);
}

function isRateLimited(error: unknown): boolean {
  assert.ok(error instanceof RateLimitedError, `expected a rate limit, got ${String(error)}`);
  assert.ok(error.retryAfterSeconds > 0);
  return true;
}

function hasLoginPage(testApp: TestApp): boolean {
  return testApp.app.hasRoute({ method: 'POST', url: '/login' });
}

function pageLogin(
  testApp: TestApp,
  form: { login: string; password: string },
  remoteAddress: string,
  headers: Record<string, string> = {},
) {
  return testApp.app.inject({
    method: 'POST',
    url: '/login',
    headers: {
      origin: testApp.config.publicUrl,
      'content-type': 'application/x-www-form-urlencoded',
      ...headers,
    },
    payload: new URLSearchParams(form).toString(),
    remoteAddress,
  });
}

function assertRetryAfter(response: { statusCode: number; headers: Record<string, unknown> }, max: number) {
  assert.equal(response.statusCode, 429);
  const retryAfter = Number(response.headers['retry-after']);
  assert.ok(
    Number.isInteger(retryAfter) && retryAfter > 0 && retryAfter <= max,
    `Retry-After: ${retryAfter}`,
  );
}

describe('login limits (service)', () => {
  test('ACC-5: the login buckets are spent before any credential lookup', async () => {
    // A database that cannot answer: if the lookup ran first, this would fail with a connection error.
    const closed = db.connectAs(db.appCredentials, 1);
    await closed.end();
    const consumed: string[] = [];
    const accounts = createAccountsService({
      sql: closed,
      rateLimits: {
        async consume(bucket) {
          consumed.push(bucket);
          throw new RateLimitedError(42);
        },
      },
    });
    await assert.rejects(
      accounts.login({ login: 'anyone', password: WRONG, previousSessionToken: undefined }, testClient()),
      isRateLimited,
    );
    assert.deepEqual(consumed, ['login_ip']);
  });

  test('ACC-5: repeated wrong passwords on one account are limited across client addresses, then even the right password is refused', async () => {
    const victim = await createAccount(db, first);
    const accounts = testAccountsService(db, first);
    const attempt = (password: string) =>
      // A fresh address every time: only the per-account bucket can stop this.
      accounts.login(
        { login: victim.user.username, password, previousSessionToken: undefined },
        testClient(),
      );
    await drain('login_account', accountKey(victim.user.username), REAL_ATTEMPTS);
    for (let i = 0; i < REAL_ATTEMPTS; i += 1) {
      await assert.rejects(attempt(WRONG), (error: { code?: string }) => error.code === 'login_failed');
    }
    await assert.rejects(attempt(WRONG), isRateLimited);
    await assert.rejects(attempt(victim.password), isRateLimited);
    // The same login typed differently is the same account.
    await assert.rejects(
      accounts.login(
        {
          login: ` ${victim.user.username.toUpperCase()} `,
          password: victim.password,
          previousSessionToken: undefined,
        },
        testClient(),
      ),
      isRateLimited,
    );
  });

  test('ACC-5: an unknown login is limited exactly like an existing one', async () => {
    const accounts = testAccountsService(db, first);
    const ghost = uniqueName('ghost');
    await drain('login_account', accountKey(ghost), REAL_ATTEMPTS);
    for (let i = 0; i < REAL_ATTEMPTS; i += 1) {
      await assert.rejects(
        accounts.login({ login: ghost, password: WRONG, previousSessionToken: undefined }, testClient()),
        (error: { code?: string }) => error.code === 'login_failed',
      );
    }
    await assert.rejects(
      accounts.login({ login: ghost, password: WRONG, previousSessionToken: undefined }, testClient()),
      isRateLimited,
    );
  });
});

describe('signup limits (service)', () => {
  test('ACC-5: signup attempts are limited per client address, before the invite is looked at', async () => {
    const accounts = testAccountsService(db, first);
    const client = testClient();
    const attempt = () =>
      accounts.signup(
        {
          invite: 'enc_inv_not-a-real-invite',
          email: 'x@example.test',
          username: uniqueName(),
          password: WRONG,
        },
        client,
      );
    await drain('signup_ip', client.ip, 2);
    for (let i = 0; i < 2; i += 1) {
      await assert.rejects(attempt(), (error: { code?: string }) => error.code === 'invite_invalid');
    }
    await assert.rejects(attempt(), isRateLimited);
    // Another address is not affected.
    await assert.rejects(
      accounts.signup(
        {
          invite: 'enc_inv_not-a-real-invite',
          email: 'x@example.test',
          username: uniqueName(),
          password: WRONG,
        },
        testClient(),
      ),
      (error: { code?: string }) => error.code === 'invite_invalid',
    );
  });
});

describe('login limits (HTTP)', () => {
  test('ACC-5: one client address is limited across many logins, and a forged X-Forwarded-For does not reset it', async (t) => {
    if (!hasLoginPage(first)) {
      t.skip('the /login page is not registered in this build');
      return;
    }
    const attacker = randomClientIp();
    await drain('login_ip', attacker, REAL_ATTEMPTS);
    for (let i = 0; i < REAL_ATTEMPTS; i += 1) {
      const response = await pageLogin(first, { login: uniqueName('guess'), password: WRONG }, attacker, {
        'x-forwarded-for': randomClientIp(),
      });
      assert.equal(response.statusCode, 401, `attempt ${i + 1}`);
    }
    const limited = await pageLogin(first, { login: uniqueName('guess'), password: WRONG }, attacker, {
      'x-forwarded-for': randomClientIp(),
    });
    assertRetryAfter(limited, BUCKETS.login_ip.seconds);
    assert.equal(limited.headers['set-cookie'], undefined);
  });

  test('ACC-5: the limit is shared by two server processes on one database', async (t) => {
    if (!hasLoginPage(first) || !hasLoginPage(second)) {
      t.skip('the /login page is not registered in this build');
      return;
    }
    const victim = await createAccount(db, first);
    await drain('login_account', accountKey(victim.user.username), REAL_ATTEMPTS);
    // Alternate between the two apps: each sees only half the attempts.
    for (let i = 0; i < REAL_ATTEMPTS; i += 1) {
      const app = i % 2 === 0 ? first : second;
      const response = await pageLogin(
        app,
        { login: victim.user.username, password: WRONG },
        randomClientIp(),
      );
      assert.equal(response.statusCode, 401, `attempt ${i + 1}`);
    }
    for (const app of [first, second]) {
      const limited = await pageLogin(
        app,
        { login: victim.user.username, password: victim.password },
        randomClientIp(),
      );
      assertRetryAfter(limited, BUCKETS.login_account.seconds);
      assert.equal(limited.headers['set-cookie'], undefined, 'no session for the right password either');
    }
  });
});

describe('per-action buckets on the API', () => {
  let minter: TestAccount;

  before(async () => {
    minter = await createAccount(db, first);
  });

  async function liveTokens(): Promise<number> {
    const [row] = await db.superuser<{ n: number }[]>`
      select count(*)::int as n from api_tokens where user_id = ${minter.user.id}::uuid`;
    return row?.n ?? 0;
  }

  test('ACC-5: token minting is limited per user across processes: 429 problem+json with Retry-After, nothing minted', async () => {
    // The account helper already minted one token.
    const allowed = BUCKETS.token_mint.points - 1;
    for (let i = 0; i < allowed; i += 1) {
      const app = i % 2 === 0 ? first : second;
      const response = await app.app.inject({
        method: 'POST',
        url: '/api/v1/tokens',
        headers: { authorization: `Bearer ${minter.apiToken}`, 'content-type': 'application/json' },
        payload: JSON.stringify({ name: `t${i}` }),
      });
      assert.equal(response.statusCode, 201, `mint ${i + 1}: ${response.body}`);
    }
    const before = await liveTokens();
    for (const app of [first, second]) {
      const limited = await app.app.inject({
        method: 'POST',
        url: '/api/v1/tokens',
        headers: { authorization: `Bearer ${minter.apiToken}`, 'content-type': 'application/json' },
        payload: JSON.stringify({ name: 'one too many' }),
      });
      assertRetryAfter(limited, BUCKETS.token_mint.seconds);
      assert.match(String(limited.headers['content-type']), /^application\/problem\+json/);
      const body = limited.json<{ code: string; status: number }>();
      assert.equal(body.code, 'rate_limited');
      assert.equal(body.status, 429);
    }
    assert.equal(await liveTokens(), before);
  });
});

describe('client address behind a proxy', () => {
  let direct: TestApp;
  let proxied: TestApp;

  before(async () => {
    direct = await buildTestApp(db);
    proxied = await buildTestApp(db, { ENCLAVE_TRUST_PROXY: '1' });
    for (const testApp of [direct, proxied]) {
      // A probe route on the test instance only, to read what the server takes as the client address.
      testApp.app.get('/test/client-ip', async (request) => ({ ip: request.ip }));
      await testApp.app.ready();
    }
  });
  after(async () => {
    await direct.app.close();
    await proxied.app.close();
  });

  function probe(testApp: TestApp, forwardedFor: string) {
    return testApp.app.inject({
      method: 'GET',
      url: '/test/client-ip',
      headers: { 'x-forwarded-for': forwardedFor },
      remoteAddress: '192.0.2.10',
    });
  }

  test('ACC-5: without ENCLAVE_TRUST_PROXY, X-Forwarded-For is ignored for the client address', async () => {
    const response = await probe(direct, '203.0.113.5');
    assert.deepEqual(response.json(), { ip: '192.0.2.10' });
  });

  test('ACC-5: with ENCLAVE_TRUST_PROXY=1, the address the proxy saw is used, not one the client prepended', async () => {
    const response = await probe(proxied, '198.51.100.66, 203.0.113.5');
    assert.deepEqual(response.json(), { ip: '203.0.113.5' });
  });

  test('ACC-5: the session records the client address the same way', async (t) => {
    if (!hasLoginPage(direct) || !hasLoginPage(proxied)) {
      t.skip('the /login page is not registered in this build');
      return;
    }
    const account = await createAccount(db, direct);
    const cases = [
      [direct, '192.0.2.20'],
      [proxied, '203.0.113.20'],
    ] as const;
    for (const [testApp, expected] of cases) {
      const response = await pageLogin(
        testApp,
        { login: account.user.username, password: account.password },
        '192.0.2.20',
        { 'x-forwarded-for': '203.0.113.20' },
      );
      assert.equal(response.statusCode, 303, response.body);
      const [row] = await db.superuser<{ client_ip: string }[]>`
        select client_ip from sessions where user_id = ${account.user.id}::uuid
        order by created_at desc limit 1`;
      assert.equal(row?.client_ip, expected);
    }
  });
});
