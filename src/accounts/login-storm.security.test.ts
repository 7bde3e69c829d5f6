import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { createAccount, randomClientIp, type TestAccount, uniqueName } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';

// Attack: a crowd (or one attacker behind many addresses) sends hundreds of
// sign-ins at once, each costing a 128 MiB, CPU-bound scrypt, to starve the
// server: fill the threads that serve files and name lookups, push its memory
// up, and make every other request wait. The password pool (password-pool.ts)
// runs only its workers' worth of hashes at once, queues a few more, and
// refuses the rest at once with 429 and Retry-After.

const WORKERS = 2;
const QUEUE = 2;
const ctx = useTestApp(
  {
    ENCLAVE_PASSWORD_WORKERS: String(WORKERS),
    ENCLAVE_PASSWORD_QUEUE: String(QUEUE),
    // Each attempt names its own address in X-Forwarded-For, so the per-address bucket does not answer first.
    ENCLAVE_TRUST_PROXY: '1',
  },
  { passwordCost: 'production' },
);

/** A safety net for every wait below, never a measure of speed. */
const SAFETY_MS = 120_000;

interface Answer {
  readonly status: number;
  readonly retryAfter: string | undefined;
}

let port: number | undefined;

async function listening(): Promise<number> {
  if (port === undefined) {
    await ctx.testApp.app.listen({ port: 0, host: '127.0.0.1' });
    port = (ctx.testApp.app.server.address() as AddressInfo).port;
  }
  return port;
}

function signInBody(login: string, password: string): string {
  return new URLSearchParams({ login, password }).toString();
}

function signInHeaders(body: string): http.OutgoingHttpHeaders {
  return {
    'content-type': 'application/x-www-form-urlencoded',
    'content-length': Buffer.byteLength(body),
    origin: ctx.testApp.config.publicUrl,
    'x-forwarded-for': randomClientIp(),
  };
}

/** One request over its own connection; resolves with the status and Retry-After once the answer is read. */
function send(
  method: 'GET' | 'POST',
  path: string,
  body?: string,
): { request: http.ClientRequest; answer: Promise<Answer> } {
  const { promise, resolve, reject } = Promise.withResolvers<Answer>();
  const request = http.request(
    {
      host: '127.0.0.1',
      port,
      method,
      path,
      agent: false,
      headers: body === undefined ? {} : signInHeaders(body),
      signal: AbortSignal.timeout(SAFETY_MS),
    },
    (response) => {
      response.resume();
      response.on('end', () => {
        const retryAfter = response.headers['retry-after'];
        resolve({ status: response.statusCode ?? 0, retryAfter });
      });
      response.on('error', reject);
    },
  );
  request.on('error', reject);
  request.end(body);
  return { request, answer: promise };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + SAFETY_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

let account: TestAccount | undefined;
/** Takes the storm's wrong passwords: on the owner's account they could pause it (ACC-5) before the last sign-in. */
let other: TestAccount | undefined;
ctx.before(async () => {
  account = await createAccount(ctx.db, ctx.testApp);
  other = await createAccount(ctx.db, ctx.testApp);
  await listening();
});

function signedUp(): TestAccount {
  assert.ok(account !== undefined);
  return account;
}

describe('a sign-in storm', () => {
  test('ACC-5: 500 concurrent sign-ins are each answered 303, 401 or 429 with Retry-After; no more hashes run at once than there are workers, and a static file and /healthz are served while the storm runs', {
    timeout: 2 * SAFETY_MS,
  }, async () => {
    const pool = ctx.testApp.app.passwords;
    const { username, password } = { username: signedUp().user.username, password: signedUp().password };
    // Mostly unknown accounts (each still costs a hash, ACC-6), some right passwords of a real one and a few
    // wrong ones of another: concurrent failures on the owner's own name would pause it, by design.
    const wrongLogin = other?.user.username ?? '';
    const storm = Array.from({ length: 500 }, (_, i) => {
      if (i % 100 === 0) return send('POST', '/login', signInBody(username, password));
      if (i % 100 === 1) return send('POST', '/login', signInBody(wrongLogin, 'not the password at all'));
      return send('POST', '/login', signInBody(uniqueName('nobody'), 'some password or other'));
    }).map(({ answer }) => answer);
    await until(() => pool.stats().running > 0, 'the first hash of the storm');

    const [css, health] = await Promise.all([
      send('GET', '/static/app.css').answer,
      send('GET', '/healthz').answer,
    ]);
    const stormStillRunning = pool.stats().running + pool.stats().queued > 0;
    assert.equal(css.status, 200);
    assert.equal(health.status, 200);

    const answers = await Promise.all(storm);
    const counts = new Map<number, number>();
    for (const answer of answers) counts.set(answer.status, (counts.get(answer.status) ?? 0) + 1);
    assert.deepEqual(
      [...counts.keys()].filter((status) => ![303, 401, 429].includes(status)),
      [],
      `statuses: ${JSON.stringify([...counts])}`,
    );
    assert.ok((counts.get(429) ?? 0) > 0, 'the storm overflowed the queue');
    for (const refused of answers.filter((answer) => answer.status === 429)) {
      assert.match(refused.retryAfter ?? '', /^[1-9]\d*$/);
    }
    const stats = pool.stats();
    assert.ok(stats.peakRunning >= 1 && stats.peakRunning <= WORKERS, `peak ${stats.peakRunning}`);
    assert.deepEqual([stats.running, stats.queued], [0, 0]);
    assert.ok(
      stormStillRunning,
      'the static file and /healthz were answered while hashes were still running',
    );

    // And after the storm, the owner signs in.
    const after = await send('POST', '/login', signInBody(username, password)).answer;
    assert.equal(after.status, 303);
  });

  test('ACC-5: with every worker busy and the queue full, a sign-in is refused at once with 429 password_checks_busy and Retry-After, before any rate limit is spent', async () => {
    const pool = ctx.testApp.app.passwords;
    const blockers = Array.from({ length: WORKERS + QUEUE }, () =>
      pool.hash('a password to keep a worker busy'),
    );
    const ip = randomClientIp();
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/login',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        origin: ctx.testApp.config.publicUrl,
        'x-forwarded-for': ip,
      },
      payload: signInBody(signedUp().user.username, signedUp().password),
    });
    assert.equal(response.statusCode, 429);
    assert.match(String(response.headers['retry-after']), /^[1-9]\d*$/);
    assert.match(response.body, /Too many sign-ins are being checked right now/);
    const spent = await ctx.db.superuser`select key from enclave.rate_limits where key = ${`login_ip:${ip}`}`;
    assert.equal(spent.length, 0, 'no rate-limit point was spent on a refused attempt');
    await Promise.all(blockers);
  });

  test('ACC-5: a sign-in still queued when its client disconnects is dropped without a hash', {
    timeout: 2 * SAFETY_MS,
  }, async () => {
    const pool = ctx.testApp.app.passwords;
    const before = pool.stats();
    const blockers = Array.from({ length: WORKERS }, () => pool.hash('a password to keep a worker busy'));
    const { request, answer } = send('POST', '/login', signInBody(uniqueName('nobody'), 'some password'));
    answer.catch(() => {});
    await until(() => pool.stats().queued === 1, 'the sign-in to be queued');
    request.destroy();
    await until(() => pool.stats().abandoned === before.abandoned + 1, 'the queued check to be dropped');
    await Promise.all(blockers);
    const after = pool.stats();
    assert.equal(after.checked, before.checked + WORKERS, 'only the blockers were hashed');
    assert.equal(after.queued, 0);
  });

  test('ACC-6: a sign-in to an unknown account costs one password check in the pool, as a wrong password does', async () => {
    const pool = ctx.testApp.app.passwords;
    const attempt = (login: string) =>
      ctx.testApp.app.inject({
        method: 'POST',
        url: '/login',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          origin: ctx.testApp.config.publicUrl,
          'x-forwarded-for': randomClientIp(),
        },
        payload: signInBody(login, 'a wrong password for anyone'),
      });
    const before = pool.stats().checked;
    assert.equal((await attempt(uniqueName('nobody'))).statusCode, 401);
    assert.equal(pool.stats().checked, before + 1);
    assert.equal((await attempt(signedUp().user.username)).statusCode, 401);
    assert.equal(pool.stats().checked, before + 2);
  });
});
