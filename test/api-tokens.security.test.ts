import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { SESSION_COOKIE } from '../src/accounts/sessions.ts';
import { mintToken } from '../src/tokens.ts';
import { createAccount, sessionCookieFor, type TestAccount } from './helpers/accounts.ts';
import { useTestApp } from './helpers/app.ts';

// Attack: an API token is read back after minting, recovered from the
// database, used after revocation or expiry, stretched beyond its scope, or
// swapped for a token of another kind; or a request's cookie and token are
// played against each other to act as someone else.

const ctx = useTestApp();
let owner: TestAccount;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
});

interface Minted {
  token: string;
  id: string;
  name: string;
  prefix: string;
  last4: string;
  scope: string;
  created_at: string;
  last_used_at: string | null;
  expires_at: string | null;
}

function bearer(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

function request(
  method: 'GET' | 'POST' | 'DELETE',
  url: string,
  headers: Record<string, string>,
  body?: unknown,
) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
  });
}

async function mint(account: TestAccount, body: Record<string, unknown>): Promise<Minted> {
  const response = await request('POST', '/api/v1/tokens', bearer(account.apiToken), body);
  assert.equal(response.statusCode, 201, response.body);
  return response.json<Minted>();
}

function me(headers: Record<string, string>) {
  return request('GET', '/api/v1/me', headers);
}

describe('minting and listing', () => {
  test('ACC-10: POST /api/v1/tokens returns an enc_live_ token once, with 201 and Cache-Control: no-store', async () => {
    const response = await request('POST', '/api/v1/tokens', bearer(owner.apiToken), { name: 'ci' });
    assert.equal(response.statusCode, 201);
    assert.equal(response.headers['cache-control'], 'no-store');
    const minted = response.json<Minted>();
    assert.match(minted.token, /^enc_live_[0-9A-Za-z]{43}$/);
    assert.equal(minted.prefix, 'enc_live_');
    assert.equal(minted.last4, minted.token.slice(-4));
    assert.equal(minted.scope, 'write');
    assert.equal(minted.expires_at, null);
    // The new token works.
    assert.equal((await me(bearer(minted.token))).statusCode, 200);
  });

  test('ACC-10: GET /api/v1/tokens lists id, name, prefix, last 4, scope, created, last used and expiry, never the value', async () => {
    const expiresAt = new Date(Date.now() + 86400_000).toISOString();
    const minted = await mint(owner, { name: 'listed', scope: 'read', expires_at: expiresAt });
    assert.equal((await me(bearer(minted.token))).statusCode, 200);
    const response = await request('GET', '/api/v1/tokens', { cookie: owner.sessionCookie });
    assert.equal(response.statusCode, 200);
    const tokens = response.json<{ tokens: Record<string, unknown>[] }>().tokens;
    const listed = tokens.find((t) => t.id === minted.id);
    assert.ok(listed !== undefined);
    assert.deepEqual(Object.keys(listed).sort(), [
      'created_at',
      'expires_at',
      'id',
      'last4',
      'last_used_at',
      'name',
      'prefix',
      'scope',
    ]);
    assert.equal(listed.name, 'listed');
    assert.equal(listed.prefix, 'enc_live_');
    assert.equal(listed.last4, minted.token.slice(-4));
    assert.equal(listed.scope, 'read');
    assert.equal(new Date(String(listed.expires_at)).toISOString(), expiresAt);
    assert.ok(typeof listed.last_used_at === 'string', 'last use is recorded');
    assert.ok(!response.body.includes(minted.token), 'the value is never listed');
    assert.ok(!response.body.includes(owner.apiToken));
  });

  test('ACC-10: only SHA-256 of a token is stored', async () => {
    const minted = await mint(owner, { name: 'hashed' });
    const [row] = await ctx.db.superuser<{ token_hash: string; dump: string }[]>`
      select token_hash, row_to_json(t)::text as dump from api_tokens t where id = ${minted.id}::uuid`;
    assert.equal(row?.token_hash, createHash('sha256').update(minted.token).digest('hex'));
    // Neither the token nor its random part is in any column.
    assert.ok(!row?.dump.includes(minted.token));
    assert.ok(!row?.dump.includes(minted.token.slice('enc_live_'.length, -4)));
  });
});

describe('revocation and expiry', () => {
  test('ACC-10: DELETE revokes a token, which is refused (401) from its next request on', async () => {
    const minted = await mint(owner, { name: 'to revoke' });
    assert.equal((await me(bearer(minted.token))).statusCode, 200);
    const revoke = await request('DELETE', `/api/v1/tokens/${minted.id}`, bearer(owner.apiToken));
    assert.equal(revoke.statusCode, 204);
    const after = await me(bearer(minted.token));
    assert.equal(after.statusCode, 401);
    assert.equal(after.json<{ code: string }>().code, 'unauthenticated');
    // Revoking again: there is no live token by that id.
    assert.equal(
      (await request('DELETE', `/api/v1/tokens/${minted.id}`, bearer(owner.apiToken))).statusCode,
      404,
    );
    const list = await request('GET', '/api/v1/tokens', bearer(owner.apiToken));
    assert.ok(!list.json<{ tokens: { id: string }[] }>().tokens.some((t) => t.id === minted.id));
  });

  test('ACC-10: a token past its expiry is refused (401)', async () => {
    const minted = await mint(owner, {
      name: 'short-lived',
      expires_at: new Date(Date.now() + 3600_000).toISOString(),
    });
    assert.equal((await me(bearer(minted.token))).statusCode, 200);
    await ctx.db
      .superuser`update api_tokens set expires_at = now() - interval '1 second' where id = ${minted.id}::uuid`;
    assert.equal((await me(bearer(minted.token))).statusCode, 401);
  });

  test('ACC-10: an expiry in the past is refused at minting (400), and nothing is minted', async () => {
    const [before] = await ctx.db.superuser<{ n: number }[]>`select count(*)::int as n from api_tokens`;
    const response = await request('POST', '/api/v1/tokens', bearer(owner.apiToken), {
      name: 'stale',
      expires_at: new Date(Date.now() - 60_000).toISOString(),
    });
    assert.equal(response.statusCode, 400);
    const body = response.json<{ code: string; errors?: { field: string }[] }>();
    assert.equal(body.code, 'validation_failed');
    assert.ok(body.errors?.some((e) => e.field === 'expires_at'));
    const [after] = await ctx.db.superuser<{ n: number }[]>`select count(*)::int as n from api_tokens`;
    assert.equal(after?.n, before?.n);
  });
});

describe('scope and kind', () => {
  test('ACC-10: a read-scoped token can GET but cannot write (403 forbidden)', async () => {
    const reader = await mint(owner, { name: 'reader', scope: 'read' });
    assert.equal((await me(bearer(reader.token))).statusCode, 200);
    assert.equal((await request('GET', '/api/v1/tokens', bearer(reader.token))).statusCode, 200);
    const write = await request('POST', '/api/v1/tokens', bearer(reader.token), { name: 'escalate' });
    assert.equal(write.statusCode, 403);
    assert.equal(write.json<{ code: string }>().code, 'forbidden');
    const revoke = await request('DELETE', `/api/v1/tokens/${owner.apiTokenId}`, bearer(reader.token));
    assert.equal(revoke.statusCode, 403);
    assert.equal((await me(bearer(owner.apiToken))).statusCode, 200, 'the other token was not revoked');
  });

  test('ACC-10: a well-formed Bearer token of another kind is refused with 401 token_wrong_kind', async () => {
    for (const kind of ['relay', 'thread', 'agent', 'inv'] as const) {
      const response = await me(bearer(mintToken(kind).token));
      assert.equal(response.statusCode, 401, kind);
      assert.equal(response.json<{ code: string }>().code, 'token_wrong_kind');
    }
  });

  test('ACC-10: a malformed Authorization header is refused with 401', async () => {
    const malformed = [
      'Bearer',
      'Bearer ',
      'Bearer not-a-token',
      `Bearer ${owner.apiToken.slice(0, -1)}`,
      `Bearer ${owner.apiToken}x`,
      `Bearer  ${owner.apiToken}`,
      `Basic ${Buffer.from('user:pass').toString('base64')}`,
      `Bearer enc_bogus_${'a'.repeat(43)}`,
      `Bearer ${'a'.repeat(5000)}`,
    ];
    for (const authorization of malformed) {
      const response = await me({ authorization });
      assert.equal(response.statusCode, 401, authorization.slice(0, 40));
      assert.equal(response.json<{ code: string }>().code, 'unauthenticated');
    }
  });

  test('ACC-10: an unknown but well-formed enc_live_ token is refused with 401', async () => {
    const response = await me(bearer(mintToken('live').token));
    assert.equal(response.statusCode, 401);
    assert.equal(response.json<{ code: string }>().code, 'unauthenticated');
  });
});

describe('one principal per request', () => {
  test('ACC-10: GET /api/v1/me gives the same user by token and by session', async () => {
    const byToken = await me(bearer(owner.apiToken));
    const bySession = await me({ cookie: owner.sessionCookie });
    assert.equal(byToken.statusCode, 200);
    assert.equal(bySession.statusCode, 200);
    const { authenticated_by: viaToken, ...tokenUser } = byToken.json<Record<string, unknown>>();
    const { authenticated_by: viaSession, ...sessionUser } = bySession.json<Record<string, unknown>>();
    assert.equal(viaToken, 'token');
    assert.equal(viaSession, 'session');
    assert.deepEqual(tokenUser, sessionUser);
    assert.equal(tokenUser.id, owner.user.id);
    assert.equal(tokenUser.tenant_id, owner.user.tenant_id);
  });

  test("ACC-10: the Bearer token is checked first: with a tampered cookie, or another user's cookie, the request is the token's user", async () => {
    const other = await createAccount(ctx.db, ctx.testApp);
    const tampered = `${SESSION_COOKIE}=${encodeURIComponent(`${ctx.testApp.app.signCookie(other.sessionToken)}x`)}`;
    for (const cookie of [tampered, other.sessionCookie]) {
      const response = await me({ ...bearer(owner.apiToken), cookie });
      assert.equal(response.statusCode, 200);
      const body = response.json<{ id: string; authenticated_by: string }>();
      assert.equal(body.id, owner.user.id);
      assert.equal(body.authenticated_by, 'token');
    }
    // A bad token does not fall back to a good cookie.
    const fallback = await me({
      authorization: `Bearer ${mintToken('live').token}`,
      cookie: other.sessionCookie,
    });
    assert.equal(fallback.statusCode, 401);
  });

  test('ACC-10: a token of a deleted user is refused', async () => {
    const leaving = await createAccount(ctx.db, ctx.testApp);
    await ctx.db.superuser`delete from users where id = ${leaving.user.id}::uuid`;
    assert.equal((await me(bearer(leaving.apiToken))).statusCode, 401);
    assert.equal(
      (await me({ cookie: sessionCookieFor(ctx.testApp.app, leaving.sessionToken) })).statusCode,
      401,
    );
  });
});

describe('bad input on the API', () => {
  function post(payload: string, contentType = 'application/json') {
    return ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers: { ...bearer(owner.apiToken), 'content-type': contentType },
      payload,
    });
  }

  async function assertProblem(
    response: Awaited<ReturnType<typeof post>>,
    status: number,
    code: string,
  ): Promise<void> {
    assert.equal(response.statusCode, status, response.body);
    assert.match(String(response.headers['content-type']), /^application\/problem\+json/);
    assert.equal(response.json<{ code: string }>().code, code);
  }

  test('malformed JSON, a non-UTF-8 body and a "__proto__" key are 400 malformed_body', async () => {
    await assertProblem(await post('{"name": "x"'), 400, 'malformed_body');
    await assertProblem(await post(''), 400, 'malformed_body');
    const latin1 = Buffer.concat([Buffer.from('{"name": "caf'), Buffer.from([0xe9]), Buffer.from('"}')]);
    await assertProblem(
      await ctx.testApp.app.inject({
        method: 'POST',
        url: '/api/v1/tokens',
        headers: { ...bearer(owner.apiToken), 'content-type': 'application/json' },
        payload: latin1,
      }),
      400,
      'malformed_body',
    );
    await assertProblem(await post('{"name": "x", "__proto__": {"scope": "write"}}'), 400, 'malformed_body');
  });

  test('unknown fields are 400 validation_failed naming the field', async () => {
    const response = await post(JSON.stringify({ name: 'x', user_id: randomUUID() }));
    await assertProblem(response, 400, 'validation_failed');
    const errors = response.json<{ errors: { field: string }[] }>().errors;
    assert.ok(
      errors.some((e) => e.field === 'body/user_id'),
      JSON.stringify(errors),
    );
  });

  test('a name over 100 characters, an empty or blank name, a bad scope or date are 400', async () => {
    for (const body of [
      { name: 'n'.repeat(101) },
      { name: '' },
      { name: '   ' },
      { name: 'x', scope: 'admin' },
      { name: 'x', expires_at: 'tomorrow' },
      { name: { text: 'x' } },
      {},
    ]) {
      await assertProblem(await post(JSON.stringify(body)), 400, 'validation_failed');
    }
    // 100 is the limit, not 99.
    assert.equal((await post(JSON.stringify({ name: 'n'.repeat(100) }))).statusCode, 201);
  });

  test('ids that are not uuids are 400 on every :id route', async () => {
    for (const url of ['/api/v1/tokens/1', '/api/v1/sessions/abc', "/api/v1/invites/'%20or%201=1"]) {
      await assertProblem(await request('DELETE', url, bearer(owner.apiToken)), 400, 'validation_failed');
    }
  });

  test('a Content-Type other than JSON is 415 on the API', async () => {
    await assertProblem(await post('name=x', 'text/plain'), 415, 'unsupported_media_type');
    await assertProblem(await post('<name>x</name>', 'application/xml'), 415, 'unsupported_media_type');
    const noType = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers: bearer(owner.apiToken),
      payload: Buffer.from('{"name":"x"}'),
    });
    assert.ok([400, 415].includes(noType.statusCode), `no Content-Type: ${noType.statusCode}`);
  });
});
