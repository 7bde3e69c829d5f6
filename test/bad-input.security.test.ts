import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, test } from 'node:test';
import { createAccount, randomClientIp, type TestAccount } from './helpers/accounts.ts';
import { type ProblemBody, useTestApp } from './helpers/app.ts';

// Attack: a client sends bytes the server was never meant to store or show —
// a NUL that PostgreSQL cannot hold (a 500 before sign-in), other control
// characters, a right-to-left override that turns "Echo \u202Egnp.exe" into
// "Echo exe.png" on the page, numbers past bigint, paths too long for the
// router, bodies far past the limit — or a valid token under a lowercase
// "bearer". Each gets a clear 4xx problem naming what is wrong, never a 500.

const ctx = useTestApp();
let owner: TestAccount;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
});

function api(method: 'GET' | 'POST' | 'PATCH', url: string, body?: unknown) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: {
      authorization: `Bearer ${owner.apiToken}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
}

function form(url: string, payload: string) {
  return ctx.testApp.app.inject({
    method: 'POST',
    url,
    remoteAddress: randomClientIp(),
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      origin: ctx.testApp.config.publicUrl,
    },
    payload,
  });
}

function assertFieldRefused(
  response: { statusCode: number; headers: Record<string, unknown>; json: <T>() => T },
  field: string,
) {
  assert.equal(response.statusCode, 400);
  assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
  const body = response.json<ProblemBody>();
  assert.equal(body.code, 'validation_failed');
  assert.ok(
    body.errors?.some((error) => error.field === field),
    `expected an error for ${field}, got ${JSON.stringify(body.errors)}`,
  );
}

let handles = 0;
async function newAgent(): Promise<string> {
  handles += 1;
  const response = await api('POST', '/api/v1/agents', {
    name: 'Echo',
    handle: `bad-input-${handles}-${Date.now().toString(36)}`,
    template: 'echo',
  });
  assert.equal(response.statusCode, 201, response.body);
  return response.json<{ id: string }>().id;
}

describe('control characters in text are refused where the body is parsed', () => {
  test('a NUL in the sign-in form is a 400 page naming the field, not a 500', async () => {
    const response = await form('/login', 'login=a%00b&password=whatever');
    assert.equal(response.statusCode, 400);
    assert.match(String(response.headers['content-type']), /^text\/html/);
    assert.match(response.body, /Username or email must be one line without control characters/);
  });

  test('a NUL in the recovery form is a 400, not a 500', async () => {
    const response = await form('/recover', 'login=a%00b&email=a%40example.test');
    assert.equal(response.statusCode, 400);
  });

  test('a NUL in a token name or an invite email is a 400 naming the field', async () => {
    assertFieldRefused(await api('POST', '/api/v1/tokens', { name: 'a\u0000b' }), 'name');
    assertFieldRefused(await api('POST', '/api/v1/invites', { email: 'a\u0000b@example.test' }), 'email');
  });

  test("a NUL in an agent's name or description, on create and on change, is a 400 naming the field", async () => {
    const create = await api('POST', '/api/v1/agents', {
      name: 'Echo\u0000',
      handle: 'nul-agent',
      description: 'x\u0000y',
      template: 'echo',
    });
    assertFieldRefused(create, 'name');
    assertFieldRefused(create, 'description');
    const id = await newAgent();
    assertFieldRefused(await api('PATCH', `/api/v1/agents/${id}`, { name: 'a\u0000b' }), 'name');
    assertFieldRefused(
      await api('PATCH', `/api/v1/agents/${id}`, { description: 'a\u0000b' }),
      'description',
    );
  });

  test('a name is one line: newline, tab and escape are refused; a description may hold lines and tabs', async () => {
    const id = await newAgent();
    for (const name of ['a\nb', 'a\tb', 'a\u001b[31mb', 'a\rb']) {
      assertFieldRefused(await api('PATCH', `/api/v1/agents/${id}`, { name }), 'name');
    }
    const description = 'First line\r\nsecond\tline\n';
    const changed = await api('PATCH', `/api/v1/agents/${id}`, { description });
    assert.equal(changed.statusCode, 200, changed.body);
    assert.equal(changed.json<{ description: string }>().description, description);
    assertFieldRefused(
      await api('PATCH', `/api/v1/agents/${id}`, { description: 'a\u0007b' }),
      'description',
    );
  });

  test('bidi override and isolate characters are refused in display names', async () => {
    const id = await newAgent();
    for (const ch of [
      '\u202A',
      '\u202B',
      '\u202C',
      '\u202D',
      '\u202E',
      '\u2066',
      '\u2067',
      '\u2068',
      '\u2069',
    ]) {
      assertFieldRefused(await api('PATCH', `/api/v1/agents/${id}`, { name: `Echo ${ch}gnp.exe` }), 'name');
    }
    assertFieldRefused(await api('POST', '/api/v1/tokens', { name: 'ci \u202Etoken' }), 'name');
    // Right-to-left text itself is a name like any other.
    const hebrew = await api('PATCH', `/api/v1/agents/${id}`, { name: 'סוכן' });
    assert.equal(hebrew.statusCode, 200, hebrew.body);
  });

  test('a control character in a query string or path parameter is a 400 naming it, on any route', async () => {
    const signup = await ctx.testApp.app.inject({ method: 'GET', url: '/signup?invite=a%00b' });
    assert.equal(signup.statusCode, 400);
    assert.equal(signup.json<ProblemBody>().errors?.[0]?.field, 'invite');
    assertFieldRefused(await api('GET', '/api/v1/audit/events?action=a%0Ab'), 'action');
    const template = await api('GET', '/api/v1/templates/ec%00ho');
    assertFieldRefused(template, 'id');
  });
});

describe('numbers in paths and queries are bounded by their schema', () => {
  test('a checkpoint size past bigint is a 400, not a 500', async () => {
    const response = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/audit/checkpoints/9223372036854775808',
    });
    assertFieldRefused(response, 'size');
  });

  test('proof and bundle sizes past bigint are a 400', async () => {
    assertFieldRefused(await api('GET', '/api/v1/audit/proof?old_size=9999999999999999999'), 'old_size');
    assertFieldRefused(
      await api('GET', '/api/v1/audit/bundle?consistency_from=1,9999999999999999999'),
      'consistency_from',
    );
  });

  test('integers past their bound in queries are a 400', async () => {
    assertFieldRefused(await api('GET', '/api/v1/audit/events?after=9223372036854775808'), 'after');
    assertFieldRefused(await api('GET', '/api/v1/audit/events?limit=1e400'), 'limit');
  });
});

describe('framework-level refusals are problem documents too', () => {
  test('a path parameter over the router limit is a 414 problem that does not echo the URL', async () => {
    const marker = `marker${'x'.repeat(600)}`;
    const response = await api('GET', `/api/v1/agents/${marker}`);
    assert.equal(response.statusCode, 414);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    assert.equal(response.json<ProblemBody>().code, 'uri_too_long');
    assert.ok(response.headers['x-request-id']);
    assert.doesNotMatch(response.body, /marker/);
  });

  test('a path that is not valid percent-encoding is a 400 problem that does not echo it', async () => {
    const response = await api('GET', '/api/v1/agents/marker%E0%A4%A');
    assert.equal(response.statusCode, 400);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    assert.doesNotMatch(response.body, /marker/);
  });

  test('ACC-10: the Bearer scheme is case-insensitive, as HTTP auth schemes are', async () => {
    for (const scheme of ['bearer', 'BEARER', 'BeArEr']) {
      const response = await ctx.testApp.app.inject({
        method: 'GET',
        url: '/api/v1/me',
        headers: { authorization: `${scheme} ${owner.apiToken}` },
      });
      assert.equal(response.statusCode, 200, `${scheme}: ${response.body}`);
    }
  });

  test('a 10 MB upload over a real socket reads a complete 413 problem, not a broken pipe', async (t) => {
    const { app } = ctx.testApp;
    const address = await app.listen({ host: '127.0.0.1', port: 0 });
    t.after(() => app.server.close());
    const url = new URL(address);
    const size = 10 * 1024 * 1024;
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(url.port), url.hostname);
      const chunks: Buffer[] = [];
      // Like curl, the client reads the answer only once it has sent the body: if the
      // server closed early, the kernel's reset would discard the unread 413.
      socket.pause();
      const readAnswer = () => {
        socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        socket.resume();
      };
      socket.on('error', (error) => reject(error));
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      socket.on('connect', () => {
        socket.write(
          `POST /api/v1/tokens HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: application/json\r\n` +
            `Authorization: Bearer ${owner.apiToken}\r\nContent-Length: ${size}\r\n\r\n`,
        );
        socket.end(Buffer.alloc(size, 0x20), readAnswer);
      });
      socket.setTimeout(30_000, () => reject(new Error('no answer within 30 s')));
    });
    assert.match(answer, /^HTTP\/1\.1 413 /);
    const body = answer.slice(answer.indexOf('\r\n\r\n') + 4);
    assert.equal(JSON.parse(body).code, 'body_too_large');
  });
});
