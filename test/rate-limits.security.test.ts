import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createDeviceCookies, DEVICE_COOKIE } from '../src/accounts/device-cookies.ts';
import { LOGIN_THROTTLE } from '../src/accounts/login-throttle.ts';
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

/** Spends `count` points of a bucket through the first process's store. */
async function spend(bucket: Bucket, key: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 1) await first.rateLimits.consume(bucket, key);
}

/** Spends all but `left` points of a bucket. */
async function drain(bucket: Bucket, key: string, left: number): Promise<void> {
  await spend(bucket, key, BUCKETS[bucket].points - left);
}

/** Ends the account's running pause, as its expiry would: the row's expiry moves into the past. */
async function endPause(key: string): Promise<void> {
  await db.superuser`
    update enclave.rate_limits set expire = ${Date.now() - 1000}::bigint where key = ${`login_account_pause:${key}`}`;
}

/** The Retry-After seconds of a sign-in refused by a rate limit. */
async function rejection(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
  } catch (error) {
    isRateLimited(error);
    return (error as RateLimitedError).retryAfterSeconds;
  }
  assert.fail('expected a rate limit');
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
        async refund() {
          assert.fail('nothing was spent to give back');
        },
      },
      deviceCookies: createDeviceCookies(first.sessionKey),
      passwords: first.app.passwords,
    });
    await assert.rejects(
      accounts.login({ login: 'anyone', password: WRONG, previousSessionToken: undefined }, testClient()),
      isRateLimited,
    );
    assert.deepEqual(consumed, ['login_ip']);
  });

  test('ACC-5: wrong passwords on one account from many addresses slow down every client without its device cookie: 429 with a growing Retry-After, the right password included', async () => {
    const victim = await createAccount(db, first);
    const key = accountKey(victim.user.username);
    const accounts = testAccountsService(db, first);
    const attempt = (password: string, login = victim.user.username) =>
      // A fresh address every time: only the per-account bucket can stop this.
      accounts.login({ login, password, previousSessionToken: undefined }, testClient());
    await spend('login_account', key, LOGIN_THROTTLE.freeFailures);
    // The 6th failure passes and starts the first pause.
    await assert.rejects(attempt(WRONG), (error: { code?: string }) => error.code === 'login_failed');
    const first15 = await rejection(attempt(victim.password));
    assert.ok(first15 > 0 && first15 <= 15, `Retry-After ${first15}`);
    // The same login typed differently is the same account.
    await rejection(attempt(victim.password, ` ${victim.user.username.toUpperCase()} `));
    // Once the pause is over (its row expired here rather than waited for), one more try, then a longer pause.
    await endPause(key);
    await assert.rejects(attempt(WRONG), (error: { code?: string }) => error.code === 'login_failed');
    const next30 = await rejection(attempt(WRONG));
    assert.ok(next30 > 15 && next30 <= 30, `Retry-After ${next30}`);
  });

  test('ACC-5: successful sign-ins do not count toward the account bucket', async () => {
    const owner = await createAccount(db, first);
    const accounts = testAccountsService(db, first);
    for (let i = 0; i < LOGIN_THROTTLE.freeFailures + 2; i += 1) {
      await accounts.login(
        { login: owner.user.username, password: owner.password, previousSessionToken: undefined },
        testClient(),
      );
    }
    const [row] = await db.superuser<{ points: number }[]>`
      select points from enclave.rate_limits where key = ${`login_account:${accountKey(owner.user.username)}`}`;
    assert.equal(row?.points ?? 0, 0);
  });

  test('ACC-5: an unknown login is limited exactly like an existing one', async () => {
    const accounts = testAccountsService(db, first);
    const ghost = uniqueName('ghost');
    await spend('login_account', accountKey(ghost), LOGIN_THROTTLE.freeFailures);
    await assert.rejects(
      accounts.login({ login: ghost, password: WRONG, previousSessionToken: undefined }, testClient()),
      (error: { code?: string }) => error.code === 'login_failed',
    );
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

  test('ACC-5: the account limit is shared by two server processes on one database', async (t) => {
    if (!hasLoginPage(first) || !hasLoginPage(second)) {
      t.skip('the /login page is not registered in this build');
      return;
    }
    const victim = await createAccount(db, first);
    await spend('login_account', accountKey(victim.user.username), LOGIN_THROTTLE.freeFailures - 2);
    // Alternate between the two apps: each sees only half the failures, and the pause the last one starts.
    for (const app of [first, second, first]) {
      const response = await pageLogin(
        app,
        { login: victim.user.username, password: WRONG },
        randomClientIp(),
      );
      assert.equal(response.statusCode, 401);
    }
    for (const app of [first, second]) {
      const limited = await pageLogin(
        app,
        { login: victim.user.username, password: victim.password },
        randomClientIp(),
      );
      assertRetryAfter(limited, LOGIN_THROTTLE.firstPauseSeconds);
      assert.equal(limited.headers['set-cookie'], undefined, 'no session for the right password either');
    }
  });
});

/** The cookies a response sets, as a browser would send them back to /login. */
function cookiesFrom(response: { cookies: { name: string; value: string }[] }): string {
  return response.cookies.map((cookie) => `${cookie.name}=${cookie.value}`).join('; ');
}

/** Wrong passwords at `login` from a fresh address each time, until the account answers 429; returns that answer. */
async function sprayUntilLimited(testApp: TestApp, login: string) {
  for (let i = 0; i < 30; i += 1) {
    const response = await pageLogin(testApp, { login, password: WRONG }, randomClientIp());
    if (response.statusCode === 429) return response;
    assert.equal(response.statusCode, 401, `spray attempt ${i + 1}: ${response.statusCode}`);
  }
  assert.fail('30 wrong passwords from 30 addresses were never limited');
}

describe('lockout (HTTP)', () => {
  test("ACC-5: an attacker spraying wrong passwords from many addresses does not stop the owner's browser, which holds the device cookie of an earlier sign-in", async () => {
    const owner = await createAccount(db, first);
    const browser = randomClientIp();
    const earlier = await pageLogin(first, { login: owner.user.username, password: owner.password }, browser);
    assert.equal(earlier.statusCode, 303, earlier.body);
    const jar = cookiesFrom(earlier);

    const limited = await sprayUntilLimited(first, owner.user.username);
    assert.ok(Number(limited.headers['retry-after']) > 0);
    // Without the device cookie the right password waits too: that is the limit against guessing.
    const stranger = await pageLogin(
      first,
      { login: owner.user.username, password: owner.password },
      randomClientIp(),
    );
    assert.equal(stranger.statusCode, 429);

    const signedIn = await pageLogin(
      first,
      { login: owner.user.username, password: owner.password },
      browser,
      { cookie: jar },
    );
    assert.equal(signedIn.statusCode, 303, signedIn.body);
    assert.ok(signedIn.cookies.some((cookie) => cookie.name === 'enclave_session'));
    // A wrong password from the owner's browser is an ordinary failure, not a wait.
    const typo = await pageLogin(first, { login: owner.user.username, password: WRONG }, browser, {
      cookie: cookiesFrom(signedIn),
    });
    assert.equal(typo.statusCode, 401);
    // The attacker is still held, and the owner's other doors stayed open.
    const still = await pageLogin(first, { login: owner.user.username, password: WRONG }, randomClientIp());
    assert.equal(still.statusCode, 429);
    const api = await first.app.inject({
      method: 'GET',
      url: '/api/v1/me',
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    assert.equal(api.statusCode, 200, 'API tokens are not touched by sign-in limits');
    const recover = await first.app.inject({
      method: 'POST',
      url: '/recover',
      headers: { origin: first.config.publicUrl, 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({ login: owner.user.username, email: owner.user.email }).toString(),
      remoteAddress: randomClientIp(),
    });
    assert.equal(recover.statusCode, 200, '/recover has its own buckets, which the spray did not touch');
  });

  /** The device cookie a sign-in response sets. */
  function deviceCookieOf(response: { cookies: { name: string; value: string }[] }): string {
    const found = response.cookies.find((cookie) => cookie.name === DEVICE_COOKIE);
    assert.ok(found !== undefined, 'a successful sign-in sets the device cookie');
    return found.value;
  }

  /** Signs `account` in through the page from a fresh address and returns its device cookie. */
  async function deviceCookieFor(testApp: TestApp, account: TestAccount): Promise<string> {
    const response = await pageLogin(
      testApp,
      { login: account.user.username, password: account.password },
      randomClientIp(),
    );
    assert.equal(response.statusCode, 303, response.body);
    return deviceCookieOf(response);
  }

  /** Leaves the account in a running pause: the free failures spent, then one real failure. */
  async function pauseAccount(account: TestAccount): Promise<void> {
    await spend('login_account', accountKey(account.user.username), LOGIN_THROTTLE.freeFailures);
    const response = await pageLogin(
      first,
      { login: account.user.username, password: WRONG },
      randomClientIp(),
    );
    assert.equal(response.statusCode, 401);
  }

  function withDevice(account: TestAccount, device: string) {
    return pageLogin(first, { login: account.user.username, password: account.password }, randomClientIp(), {
      cookie: `${DEVICE_COOKIE}=${device}`,
    });
  }

  test("ACC-5: a forged, tampered, expired, foreign-key or other account's device cookie gives no exemption", async () => {
    const victim = await createAccount(db, first);
    const other = await createAccount(db, first);
    const genuine = await deviceCookieFor(first, victim);
    const othersCookie = await deviceCookieFor(first, other);
    await pauseAccount(victim);
    const [version, , nonce, expires, mac] = genuine.split('.');
    const month = 31 * 86400_000;
    const refused = {
      "another account's cookie": othersCookie,
      'the name swapped in': [version, other.user.username, nonce, expires, mac].join('.'),
      'a later expiry': [version, victim.user.username, nonce, String(Number(expires) + 86400), mac].join(
        '.',
      ),
      // The MAC's first character: all six of its bits count (the last one's lowest two are padding).
      'a flipped MAC': [
        version,
        victim.user.username,
        nonce,
        expires,
        `${mac?.startsWith('A') ? 'B' : 'A'}${mac?.slice(1)}`,
      ].join('.'),
      'no MAC': [version, victim.user.username, nonce, expires].join('.'),
      'signed with another key': createDeviceCookies(randomBytes(32).toString('base64url')).issue(
        victim.user.username,
      ),
      expired: createDeviceCookies(first.sessionKey, () => Date.now() - month).issue(victim.user.username),
      'not a device cookie': 'garbage',
    };
    for (const [what, device] of Object.entries(refused)) {
      const response = await withDevice(victim, device);
      assert.equal(response.statusCode, 429, `${what}: ${response.statusCode}`);
    }
    const accepted = await withDevice(victim, genuine);
    assert.equal(accepted.statusCode, 303, 'the genuine cookie still exempts');
  });

  test('ACC-5: a device cookie used for failed sign-ins is locked out after 10 failures, and then exempts nothing', async () => {
    const victim = await createAccount(db, first);
    const device = await deviceCookieFor(first, victim);
    const nonce = device.split('.')[2] ?? '';
    await drain('login_device', nonce, 1);
    const last = await pageLogin(first, { login: victim.user.username, password: WRONG }, randomClientIp(), {
      cookie: `${DEVICE_COOKIE}=${device}`,
    });
    assert.equal(last.statusCode, 401, 'the tenth failure on this cookie');
    await pauseAccount(victim);
    const response = await withDevice(victim, device);
    assert.equal(response.statusCode, 429, 'a locked-out cookie waits like any stranger');
  });

  test("ACC-5: a sign-in spray at the owner's login name does not block the owner's password change", async () => {
    const owner = await createAccount(db, first);
    await pauseAccount(owner);
    const response = await first.app.inject({
      method: 'POST',
      url: '/profile/password',
      headers: {
        origin: first.config.publicUrl,
        'content-type': 'application/x-www-form-urlencoded',
        cookie: owner.sessionCookie,
      },
      payload: new URLSearchParams({
        current_password: owner.password,
        new_password: 'a brand new password',
      }).toString(),
      remoteAddress: randomClientIp(),
    });
    assert.equal(response.statusCode, 303, response.body);
    assert.equal(response.headers.location, '/profile?notice=password-changed');
  });

  test('ACC-5: the device cookie is HttpOnly, SameSite=Strict, sent only to /login, lives 30 days, and is Secure in production', async () => {
    const production = await buildTestApp(db, {
      ENCLAVE_ENV: 'production',
      ENCLAVE_PUBLIC_URL: 'https://enclave.example',
      ENCLAVE_SMTP_URL: 'smtp://mail.example:587',
    });
    try {
      for (const [testApp, secure] of [
        [first, false],
        [production, true],
      ] as const) {
        const account = await createAccount(db, testApp);
        const response = await pageLogin(
          testApp,
          { login: account.user.username, password: account.password },
          randomClientIp(),
        );
        assert.equal(response.statusCode, 303, response.body);
        const cookie = response.cookies.find((set) => set.name === DEVICE_COOKIE);
        assert.ok(cookie !== undefined);
        assert.equal(cookie.httpOnly, true);
        assert.equal(cookie.sameSite, 'Strict');
        assert.equal(cookie.path, '/login');
        assert.equal(cookie.maxAge, 30 * 86400);
        assert.equal(cookie.secure === true, secure);
        // The login name and a nonce: the account it is bound to, and a key for its own failures.
        assert.match(cookie.value, new RegExp(`^d1\\.${account.user.username}\\.[A-Za-z0-9_-]{22}\\.`));
      }
    } finally {
      await production.app.close();
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
