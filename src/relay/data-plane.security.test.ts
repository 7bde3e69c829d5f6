// Attack: a caller (or anyone who found a URL) drives the relay's data plane
// with the wrong credential — no token, an unknown, revoked or expired one,
// another kind (API, agent, the other relay kind), one grant's token on
// another grant's thread, a participant's token where only the owner may
// answer — or with bad input (a megabyte, blank or NUL text, a bad id), or
// floods it, or replays a write. Each is a clear 4xx that writes nothing,
// never a 500 or a hang.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { createAccount, randomClientIp, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { exhaustBucket } from '../../test/helpers/rate-limits.ts';
import {
  type ApprovedConnection,
  approvedConnection,
  type RelayAgent,
  relayAgent,
  relayParties,
} from '../../test/helpers/relay.ts';
import type { Bucket } from '../http/rate-limits.ts';
import { hashToken, mintToken } from '../tokens.ts';
import { MESSAGE_BODY_LIMIT } from './data-plane-routes.ts';
import { requestFingerprint } from './idempotency.ts';
import { MAX_MESSAGE_BYTES } from './threads.ts';

const ctx = useTestApp();
let owner: TestAccount;
let asker: TestAccount;
let stranger: TestAccount;
let target: RelayAgent;
let connection: ApprovedConnection;
let other: ApprovedConnection;

ctx.before(async () => {
  ({ owner, asker, stranger, target, connection } = await relayParties(ctx));
  // Another grant to the same agent, of another tenant: its token must not reach the first grant's threads.
  other = await approvedConnection(ctx, owner, stranger, target);
});

interface ThreadStarted {
  thread: { id: string; state: string; message_count: number };
  message: { id: string; seq: number; author: string; delivery: string | null; body: string | null };
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

function send(
  method: 'GET' | 'POST' | 'PUT',
  url: string,
  headers: Record<string, string>,
  payload?: object | string,
): Promise<LightMyRequestResponse> {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: payload === undefined ? headers : { 'content-type': 'application/json', ...headers },
    ...(payload === undefined ? {} : { payload }),
  });
}

async function start(token: string, text: string, headers: Record<string, string> = {}) {
  return send('POST', '/relay/v1/threads', { ...bearer(token), ...headers }, { text });
}

async function startedThread(token = connection.relayToken): Promise<ThreadStarted> {
  const response = await start(token, `hello ${randomUUID()}`);
  assert.equal(response.statusCode, 201, response.body);
  return response.json<ThreadStarted>();
}

async function threadToken(account: TestAccount, threadId: string): Promise<string> {
  const response = await send('POST', `/api/v1/threads/${threadId}/access-token`, bearer(account.apiToken));
  assert.equal(response.statusCode, 201, response.body);
  return response.json<{ thread_token: string }>().thread_token;
}

async function rowCounts() {
  const [row] = await ctx.db.superuser<{ threads: number; messages: number; keys: number }[]>`
    select (select count(*)::int from relay_threads) as threads,
           (select count(*)::int from relay_messages) as messages,
           (select count(*)::int from idempotency_keys) as keys`;
  return row;
}

function problem(response: LightMyRequestResponse): { status: number; code: string | undefined } {
  return { status: response.statusCode, code: response.json<{ code?: string }>().code };
}

describe('the relay data plane', () => {
  test('RLY-3: a relay token starts a thread (201, the caller message queued) and follows it up; the participant reads both with a thread token', async () => {
    const started = await start(connection.relayToken, 'Hello, agent');
    assert.equal(started.statusCode, 201, started.body);
    const { thread, message } = started.json<ThreadStarted>();
    assert.deepEqual(
      [thread.state, thread.message_count, message.author, message.delivery, message.body],
      ['open', 1, 'caller', 'queued', 'Hello, agent'],
    );
    assert.equal('agent_id' in thread, false, "the caller's view names nothing of the target's tenant");
    const followUp = await send(
      'POST',
      `/relay/v1/threads/${thread.id}/messages`,
      bearer(connection.relayToken),
      {
        text: 'and again',
      },
    );
    assert.equal(followUp.statusCode, 201, followUp.body);
    assert.equal(followUp.json<{ seq: number }>().seq, 2);

    const token = await threadToken(asker, thread.id);
    const read = await send('GET', `/relay/v1/threads/${thread.id}`, bearer(token));
    assert.equal(read.statusCode, 200, read.body);
    const body = read.json<{ messages: { body: string; author: string; payload_expired: boolean }[] }>();
    assert.deepEqual(
      body.messages.map((m) => [m.author, m.body, m.payload_expired]),
      [
        ['caller', 'Hello, agent', false],
        ['caller', 'and again', false],
      ],
    );
  });

  test('RLY-3, RLY-4: every /relay/v1 route is in the OpenAPI document (tag relay) with the token it takes', async () => {
    const doc = (await ctx.testApp.app.inject({ method: 'GET', url: '/openapi.json' })).json<{
      paths: Record<string, Record<string, { tags?: string[]; security?: Record<string, unknown>[] }>>;
    }>();
    const schemes = Object.entries(doc.paths)
      .filter(([path]) => path.startsWith('/relay/v1/'))
      .flatMap(([path, item]) =>
        Object.entries(item).map(([method, operation]) => [
          `${method.toUpperCase()} ${path}`,
          operation.tags?.join(),
          Object.keys(operation.security?.[0] ?? {}).join(),
        ]),
      )
      .sort();
    assert.deepEqual(schemes, [
      ['GET /relay/v1/threads/{id}', 'relay', 'threadToken'],
      ['POST /relay/v1/threads', 'relay', 'relayToken'],
      ['POST /relay/v1/threads/{id}/close', 'relay', 'threadToken'],
      ['POST /relay/v1/threads/{id}/messages', 'relay', 'relayToken'],
      ['POST /relay/v1/threads/{id}/responses', 'relay', 'threadToken'],
    ]);
  });

  test('RLY-3: no token, a malformed, unknown or wrong-kind token (thread, API, agent) on the relay routes is 401 with WWW-Authenticate: Bearer, and nothing is written', async () => {
    const { thread } = await startedThread();
    const ownerThreadToken = await threadToken(owner, thread.id);
    const before = await rowCounts();
    const cases: [string, Record<string, string>, string, string][] = [
      ['no token', {}, 'relay_token_invalid', 'Bearer'],
      ['a cookie only', { cookie: asker.sessionCookie }, 'relay_token_invalid', 'Bearer'],
      [
        'not a Bearer',
        { authorization: `Basic ${connection.relayToken}` },
        'relay_token_invalid',
        'Bearer error="invalid_token"',
      ],
      ['malformed', bearer('enc_relay_short'), 'relay_token_invalid', 'Bearer error="invalid_token"'],
      ['unknown', bearer(mintToken('relay').token), 'relay_token_invalid', 'Bearer error="invalid_token"'],
      ['a thread token', bearer(ownerThreadToken), 'token_wrong_kind', 'Bearer error="invalid_token"'],
      ['an API token', bearer(asker.apiToken), 'token_wrong_kind', 'Bearer error="invalid_token"'],
      [
        'an agent token',
        bearer(mintToken('agent').token),
        'token_wrong_kind',
        'Bearer error="invalid_token"',
      ],
    ];
    for (const [name, headers, code, challenge] of cases) {
      for (const url of ['/relay/v1/threads', `/relay/v1/threads/${thread.id}/messages`]) {
        const response = await send('POST', url, headers, { text: 'let me in' });
        assert.deepEqual(problem(response), { status: 401, code }, `${name} on ${url}`);
        assert.equal(response.headers['www-authenticate'], challenge, `${name} on ${url}`);
      }
    }
    assert.deepEqual(await rowCounts(), before);
  });

  test("RLY-3: another grant's thread id is the same 404 as an unknown id, and nothing is written", async () => {
    const { thread } = await startedThread();
    const before = await rowCounts();
    const foreign = await send('POST', `/relay/v1/threads/${thread.id}/messages`, bearer(other.relayToken), {
      text: 'into their thread',
    });
    const unknown = await send(
      'POST',
      `/relay/v1/threads/${randomUUID()}/messages`,
      bearer(other.relayToken),
      {
        text: 'into their thread',
      },
    );
    assert.deepEqual(problem(foreign), { status: 404, code: 'not_found' });
    const strip = (body: string) => body.replace(/"request_id":"[^"]+"/, '');
    assert.equal(strip(foreign.body), strip(unknown.body));
    assert.deepEqual(await rowCounts(), before);
  });

  test('RLY-3: bad input is a clear 4xx naming the field and writes nothing: 1 MB body, over 32 KiB, blank text, text not a string, NUL, a bad thread id', async () => {
    const { thread } = await startedThread();
    const before = await rowCounts();
    const token = bearer(connection.relayToken);
    const follow = `/relay/v1/threads/${thread.id}/messages`;
    const megabyte = JSON.stringify({ text: 'x'.repeat(1024 * 1024) });
    assert.ok(megabyte.length > MESSAGE_BODY_LIMIT);
    const cases: [string, string, object | string, number, string, string | undefined][] = [
      ['1 MB body', '/relay/v1/threads', megabyte, 413, 'body_too_large', undefined],
      ['1 MB body (follow-up)', follow, megabyte, 413, 'body_too_large', undefined],
      [
        'over 32 KiB',
        '/relay/v1/threads',
        { text: 'é'.repeat(MAX_MESSAGE_BYTES / 2 + 1) },
        413,
        'message_too_large',
        'text',
      ],
      ['blank text', '/relay/v1/threads', { text: '  \n ' }, 400, 'validation_failed', 'text'],
      ['empty text', follow, { text: '' }, 400, 'validation_failed', 'text'],
      ['text a number', '/relay/v1/threads', { text: 42 }, 400, 'validation_failed', 'text'],
      ['no text', '/relay/v1/threads', {}, 400, 'validation_failed', 'text'],
      ['another field', '/relay/v1/threads', { text: 'hi', to: 'x' }, 400, 'validation_failed', 'to'],
      // PostgreSQL cannot store NUL: refused as a control character (not stripped, not a 500).
      ['NUL', '/relay/v1/threads', { text: 'a\u0000b' }, 400, 'validation_failed', 'text'],
      ['NUL (follow-up)', follow, { text: '\u0000' }, 400, 'validation_failed', 'text'],
      [
        'a bad thread id',
        '/relay/v1/threads/not-a-uuid/messages',
        { text: 'hi' },
        400,
        'validation_failed',
        'id',
      ],
    ];
    for (const [name, url, payload, status, code, field] of cases) {
      const response = await send('POST', url, token, payload);
      assert.deepEqual(problem(response), { status, code }, `${name}: ${response.body.slice(0, 300)}`);
      if (field !== undefined) {
        const errors = response.json<{ errors?: { field: string }[] }>().errors ?? [];
        assert.ok(
          errors.some((error) => error.field.endsWith(field)),
          `${name} names ${field}: ${response.body}`,
        );
      }
    }
    const readToken = bearer(await threadToken(asker, thread.id));
    const badRead = await send('GET', '/relay/v1/threads/not-a-uuid', readToken);
    assert.deepEqual(problem(badRead), { status: 400, code: 'validation_failed' });
    const badPage = await send('GET', `/relay/v1/threads/${thread.id}?limit=100000`, readToken);
    assert.deepEqual(problem(badPage), { status: 400, code: 'validation_failed' });
    assert.deepEqual(await rowCounts(), before);
  });

  test("RLY-3: a revoked connection's token is 401 relay_token_invalid, writes nothing, and its open thread reads as revoked", async () => {
    const fresh = await approvedConnection(ctx, owner, asker, await relayAgent(ctx, owner));
    const { thread } = await startedThread(fresh.relayToken);
    const participant = await threadToken(asker, thread.id);
    const revoked = await send(
      'POST',
      `/api/v1/connections/${fresh.connectionId}/revoke`,
      bearer(owner.apiToken),
    );
    assert.equal(revoked.statusCode, 200, revoked.body);
    const before = await rowCounts();
    for (const url of ['/relay/v1/threads', `/relay/v1/threads/${thread.id}/messages`]) {
      const response = await send('POST', url, bearer(fresh.relayToken), { text: 'still there?' });
      assert.deepEqual(problem(response), { status: 401, code: 'relay_token_invalid' }, url);
    }
    assert.deepEqual(await rowCounts(), before);
    const read = await send('GET', `/relay/v1/threads/${thread.id}`, bearer(participant));
    assert.equal(read.statusCode, 200, read.body);
    assert.equal(read.json<{ thread: { state: string } }>().thread.state, 'revoked');
  });

  test("RLY-1, RLY-3: once the target's card is unpublished, thread start and follow-up (with or without an Idempotency-Key) answer exactly as a connection request to an unknown handle, as /a2a/:handle does, and write nothing; the thread's holders still read it; publishing again reopens it", async () => {
    const agent = await relayAgent(ctx, owner);
    const fresh = await approvedConnection(ctx, owner, asker, agent);
    const { thread } = await startedThread(fresh.relayToken);
    const participant = bearer(await threadToken(asker, thread.id));
    const publish = (published: boolean) =>
      send('PUT', `/api/v1/agents/${agent.id}/card`, bearer(owner.apiToken), { published });
    assert.equal((await publish(false)).statusCode, 200);
    const unknown = await send('POST', '/api/v1/connections', bearer(stranger.apiToken), {
      handle: `nobody-${randomUUID().slice(0, 8)}`,
      message: 'hello',
    });
    assert.deepEqual(problem(unknown), { status: 404, code: 'not_found' });
    const strip = (body: string) => body.replace(/"request_id":"[^"]+"/, '');
    const before = await rowCounts();
    for (const url of ['/relay/v1/threads', `/relay/v1/threads/${thread.id}/messages`]) {
      for (const headers of [{}, { 'idempotency-key': `"${randomUUID()}"` }]) {
        const response = await send(
          'POST',
          url,
          { ...bearer(fresh.relayToken), ...headers },
          { text: 'hi?' },
        );
        assert.equal(strip(response.body), strip(unknown.body), `${url} ${JSON.stringify(headers)}`);
      }
    }
    // A2A refuses it as it refuses a handle nobody has: the same JSON-RPC error.
    const rpc = (handle: string) =>
      send(
        'POST',
        `/a2a/${handle}`,
        { ...bearer(fresh.relayToken), 'a2a-version': '1.0' },
        {
          jsonrpc: '2.0',
          id: 1,
          method: 'SendMessage',
          params: { message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'hi?' }] } },
        },
      );
    const [a2aUnpublished, a2aUnknown] = [
      await rpc(agent.handle),
      await rpc(`nobody-${randomUUID().slice(0, 8)}`),
    ];
    assert.equal(a2aUnpublished.body, a2aUnknown.body);
    assert.equal(a2aUnpublished.json<{ error: { code: number } }>().error.code, -32001);
    assert.deepEqual(await rowCounts(), before);
    // The owner withdrew the agent from new business, not the record: a participant still reads what was said.
    const read = await send('GET', `/relay/v1/threads/${thread.id}`, participant);
    assert.equal(read.statusCode, 200, read.body);
    assert.equal(read.json<{ thread: { state: string } }>().thread.state, 'open');
    // The connection was never revoked: a published card takes messages again.
    assert.equal((await publish(true)).statusCode, 200);
    const again = await send('POST', `/relay/v1/threads/${thread.id}/messages`, bearer(fresh.relayToken), {
      text: 'back again',
    });
    assert.equal(again.statusCode, 201, again.body);
  });

  test('RLY-4: a thread token opens only its own thread: another thread id is the same 404 as an unknown one', async () => {
    const mine = await startedThread();
    const theirs = await startedThread(other.relayToken);
    const token = bearer(await threadToken(asker, mine.thread.id));
    const strip = (body: string) => body.replace(/"request_id":"[^"]+"/, '');
    for (const [method, suffix] of [
      ['GET', ''],
      ['POST', '/close'],
    ] as const) {
      const foreign = await send(method, `/relay/v1/threads/${theirs.thread.id}${suffix}`, token);
      const unknown = await send(method, `/relay/v1/threads/${randomUUID()}${suffix}`, token);
      assert.deepEqual(problem(foreign), { status: 404, code: 'not_found' });
      assert.equal(strip(foreign.body), strip(unknown.body));
    }
    const stillOpen = await send(
      'GET',
      `/relay/v1/threads/${theirs.thread.id}`,
      bearer(await threadToken(stranger, theirs.thread.id)),
    );
    assert.equal(stillOpen.json<{ thread: { state: string } }>().thread.state, 'open');
  });

  test('RLY-4: an expired thread token, a relay token, an API token or none on the thread routes is 401, and nothing changes', async () => {
    const { thread } = await startedThread();
    const expired = await threadToken(owner, thread.id);
    await ctx.db.superuser`update relay_thread_tokens set created_at = now() - interval '61 minutes',
      expires_at = now() - interval '1 minute' where token_hash = ${hashToken(expired).toString('hex')}`;
    const before = await rowCounts();
    const cases: [string, Record<string, string>, string][] = [
      ['none', {}, 'thread_token_invalid'],
      ['expired', bearer(expired), 'thread_token_invalid'],
      ['unknown', bearer(mintToken('thread').token), 'thread_token_invalid'],
      ['a relay token', bearer(connection.relayToken), 'token_wrong_kind'],
      ['an API token', bearer(owner.apiToken), 'token_wrong_kind'],
    ];
    for (const [name, headers, code] of cases) {
      for (const [method, suffix, payload] of [
        ['GET', '', undefined],
        ['POST', '/responses', { text: 'owner here' }],
        ['POST', '/close', undefined],
      ] as const) {
        const response = await send(method, `/relay/v1/threads/${thread.id}${suffix}`, headers, payload);
        assert.deepEqual(problem(response), { status: 401, code }, `${name} ${method} ${suffix}`);
        assert.match(String(response.headers['www-authenticate']), /^Bearer/);
      }
    }
    assert.deepEqual(await rowCounts(), before);
    const read = await send(
      'GET',
      `/relay/v1/threads/${thread.id}`,
      bearer(await threadToken(owner, thread.id)),
    );
    assert.equal(read.json<{ thread: { state: string } }>().thread.state, 'open');
  });

  test("RLY-4: only the owner's thread token answers (a participant's is 403); either holder closes; a closed thread takes no more (409)", async () => {
    const { thread } = await startedThread();
    const participant = bearer(await threadToken(asker, thread.id));
    const ownerToken = bearer(await threadToken(owner, thread.id));
    const refused = await send('POST', `/relay/v1/threads/${thread.id}/responses`, participant, {
      text: 'as if owner',
    });
    assert.deepEqual(problem(refused), { status: 403, code: 'forbidden' });
    const answered = await send('POST', `/relay/v1/threads/${thread.id}/responses`, ownerToken, {
      text: 'a person here',
    });
    assert.equal(answered.statusCode, 201, answered.body);
    assert.deepEqual(
      [answered.json<{ author: string }>().author, answered.json<{ seq: number }>().seq],
      ['owner', 2],
    );
    const closed = await send('POST', `/relay/v1/threads/${thread.id}/close`, participant);
    assert.equal(closed.statusCode, 200, closed.body);
    assert.equal(closed.json<{ state: string }>().state, 'closed');
    const again = await send('POST', `/relay/v1/threads/${thread.id}/close`, ownerToken);
    assert.equal(again.json<{ state: string }>().state, 'closed');
    const late = await send(
      'POST',
      `/relay/v1/threads/${thread.id}/messages`,
      bearer(connection.relayToken),
      {
        text: 'one more',
      },
    );
    assert.deepEqual(problem(late), { status: 409, code: 'thread_state' });
    const lateAnswer = await send('POST', `/relay/v1/threads/${thread.id}/responses`, ownerToken, {
      text: 'late',
    });
    assert.deepEqual(problem(lateAnswer), { status: 409, code: 'thread_state' });
  });

  test("RLY-4: a thread token is minted from a session or an API token; a stranger's mint is the same 404 as an unknown thread; the owner's list shows the thread, without bodies", async () => {
    const { thread } = await startedThread();
    const bySession = await send('POST', `/api/v1/threads/${thread.id}/access-token`, {
      cookie: owner.sessionCookie,
      origin: new URL(ctx.testApp.config.publicUrl).origin,
    });
    assert.equal(bySession.statusCode, 201, bySession.body);
    assert.equal(bySession.json<{ holder: string }>().holder, 'owner');
    assert.equal(bySession.headers['cache-control'], 'no-store');
    const byToken = await send('POST', `/api/v1/threads/${thread.id}/access-token`, bearer(asker.apiToken));
    assert.equal(byToken.json<{ holder: string }>().holder, 'participant');
    const strip = (body: string) => body.replace(/"request_id":"[^"]+"/, '');
    const foreign = await send(
      'POST',
      `/api/v1/threads/${thread.id}/access-token`,
      bearer(stranger.apiToken),
    );
    const unknown = await send(
      'POST',
      `/api/v1/threads/${randomUUID()}/access-token`,
      bearer(stranger.apiToken),
    );
    assert.deepEqual(problem(foreign), { status: 404, code: 'not_found' });
    assert.equal(strip(foreign.body), strip(unknown.body));
    const relayTokenMint = await send(
      'POST',
      `/api/v1/threads/${thread.id}/access-token`,
      bearer(connection.relayToken),
    );
    assert.deepEqual(problem(relayTokenMint), { status: 401, code: 'token_wrong_kind' });

    const listed = await send(
      'GET',
      `/api/v1/threads?agent_id=${target.id}&limit=500`,
      bearer(owner.apiToken),
    );
    assert.equal(listed.statusCode, 200, listed.body);
    const threads = listed.json<{ threads: Record<string, unknown>[] }>().threads;
    const row = threads.find((t) => t.id === thread.id);
    assert.ok(row, 'the owner lists the thread');
    assert.equal(row.agent_id, target.id);
    assert.equal(listed.body.includes('hello '), false, 'no message body in the list');
    const askers = await send('GET', '/api/v1/threads', bearer(asker.apiToken));
    assert.deepEqual(askers.json<{ threads: unknown[] }>().threads, []);
  });

  test('RLY-4: messages are paged by seq (after_seq, limit), and a payload removed by retention reads as null with payload_expired', async () => {
    const { thread, message } = await startedThread();
    for (const text of ['two', 'three']) {
      const response = await send(
        'POST',
        `/relay/v1/threads/${thread.id}/messages`,
        bearer(connection.relayToken),
        { text },
      );
      assert.equal(response.statusCode, 201, response.body);
    }
    await ctx.db
      .superuser`update relay_messages set body = null, payload_deleted_at = now() where id = ${message.id}::uuid`;
    const token = bearer(await threadToken(asker, thread.id));
    const first = await send('GET', `/relay/v1/threads/${thread.id}?limit=2`, token);
    assert.equal(first.statusCode, 200, first.body);
    const page = first.json<{
      messages: { seq: number; body: string | null; payload_expired: boolean }[];
      next_after_seq: number | null;
    }>();
    assert.deepEqual(
      page.messages.map((m) => [m.seq, m.body, m.payload_expired]),
      [
        [1, null, true],
        [2, 'two', false],
      ],
    );
    assert.equal(page.next_after_seq, 2);
    const second = await send('GET', `/relay/v1/threads/${thread.id}?limit=2&after_seq=2`, token);
    const rest = second.json<{ messages: { seq: number }[]; next_after_seq: number | null }>();
    assert.deepEqual([rest.messages.map((m) => m.seq), rest.next_after_seq], [[3], null]);
  });

  test("RLY-5: a relay token whose thread-start bucket ran out gets 429 with Retry-After, before its lookup, and nothing is written; another token's bucket is its own", async () => {
    const spent = await approvedConnection(ctx, owner, asker, await relayAgent(ctx, owner));
    const unknown = mintToken('relay').token;
    for (const token of [spent.relayToken, unknown]) {
      const key = hashToken(token).toString('hex');
      for (let i = 0; i < 60; i += 1) await ctx.testApp.rateLimits.consume('relay_thread_start_token', key);
    }
    const before = await rowCounts();
    for (const token of [spent.relayToken, unknown]) {
      const response = await start(token, 'one too many');
      // The unknown token is 429 too: the bucket is spent before any lookup.
      assert.deepEqual(problem(response), { status: 429, code: 'rate_limited' });
      assert.ok(Number(response.headers['retry-after']) >= 1, 'Retry-After in seconds');
    }
    assert.deepEqual(await rowCounts(), before);
    const followUps = await send(
      'POST',
      `/relay/v1/threads/${randomUUID()}/messages`,
      bearer(spent.relayToken),
      {
        text: 'a follow-up has its own bucket',
      },
    );
    assert.equal(followUps.statusCode, 404, followUps.body);
    assert.equal((await start(connection.relayToken, 'mine still works')).statusCode, 201);
  });

  test('RLY-5: reads with one thread token and mints by one user have buckets of their own (429 with Retry-After)', async () => {
    const { thread } = await startedThread();
    const token = await threadToken(asker, thread.id);
    const key = hashToken(token).toString('hex');
    for (let i = 0; i < 600; i += 1) await ctx.testApp.rateLimits.consume('relay_read_token', key);
    const read = await send('GET', `/relay/v1/threads/${thread.id}`, bearer(token));
    assert.deepEqual(problem(read), { status: 429, code: 'rate_limited' });
    assert.ok(read.headers['retry-after']);
    const minter = await createAccount(ctx.db, ctx.testApp);
    for (let i = 0; i < 60; i += 1)
      await ctx.testApp.rateLimits.consume('relay_token_mint_user', minter.user.id);
    const mint = await send('POST', `/api/v1/threads/${thread.id}/access-token`, bearer(minter.apiToken));
    assert.deepEqual(problem(mint), { status: 429, code: 'rate_limited' });
    assert.ok(mint.headers['retry-after']);
  });

  test('RLY-5: a relay token past its follow-up bucket (relay_follow_up_token) gets 429 with Retry-After, before its lookup, and nothing is written; its thread starts have a bucket of their own', async () => {
    const spent = await approvedConnection(ctx, owner, asker, await relayAgent(ctx, owner));
    const { thread } = await startedThread(spent.relayToken);
    const unknown = mintToken('relay').token;
    for (const token of [spent.relayToken, unknown]) {
      await exhaustBucket(ctx.db, 'relay_follow_up_token', hashToken(token).toString('hex'));
    }
    const before = await rowCounts();
    for (const token of [spent.relayToken, unknown]) {
      const response = await send('POST', `/relay/v1/threads/${thread.id}/messages`, bearer(token), {
        text: 'one too many',
      });
      assert.deepEqual(problem(response), { status: 429, code: 'rate_limited' });
      assert.ok(Number(response.headers['retry-after']) >= 1, 'Retry-After in seconds');
    }
    assert.deepEqual(await rowCounts(), before);
    assert.equal((await start(spent.relayToken, 'a new thread still starts')).statusCode, 201);
  });

  test('RLY-5: one client address past its bucket for thread start, follow-up, read or thread-token mint (relay_*_ip) gets 429 with Retry-After whatever valid token or user it presents, and nothing is written; another address is served', async () => {
    const { thread } = await startedThread();
    const participant = await threadToken(asker, thread.id);
    const cases: [Bucket, () => [string, string, Record<string, string>, object | undefined]][] = [
      [
        'relay_thread_start_ip',
        () => ['POST', '/relay/v1/threads', bearer(connection.relayToken), { text: 'hi' }],
      ],
      [
        'relay_follow_up_ip',
        () => [
          'POST',
          `/relay/v1/threads/${thread.id}/messages`,
          bearer(connection.relayToken),
          { text: 'hi' },
        ],
      ],
      ['relay_read_ip', () => ['GET', `/relay/v1/threads/${thread.id}`, bearer(participant), undefined]],
      [
        'relay_token_mint_ip',
        () => ['POST', `/api/v1/threads/${thread.id}/access-token`, bearer(asker.apiToken), undefined],
      ],
    ];
    for (const [bucket, request] of cases) {
      const [method, url, headers, payload] = request();
      const from = (remoteAddress: string) =>
        ctx.testApp.app.inject({
          method: method as 'GET',
          url,
          remoteAddress,
          headers: payload === undefined ? headers : { 'content-type': 'application/json', ...headers },
          ...(payload === undefined ? {} : { payload }),
        });
      const address = randomClientIp();
      await exhaustBucket(ctx.db, bucket, address);
      const written = async () => ({
        ...(await rowCounts()),
        tokens: (
          await ctx.db.superuser<{ n: number }[]>`select count(*)::int as n from relay_thread_tokens`
        )[0]?.n,
      });
      const before = await written();
      const limited = await from(address);
      assert.deepEqual(problem(limited), { status: 429, code: 'rate_limited' }, bucket);
      assert.ok(Number(limited.headers['retry-after']) >= 1, `${bucket}: Retry-After in seconds`);
      assert.deepEqual(await written(), before, bucket);
      const elsewhere = await from(randomClientIp());
      assert.ok(elsewhere.statusCode < 300, `${bucket} from another address: ${elsewhere.body}`);
    }
  });

  test('RLY-6: concurrent replays of one thread start with the same Idempotency-Key create exactly one thread; each answer is the original 201 or 409 in flight', async () => {
    const fresh = await approvedConnection(ctx, owner, asker, await relayAgent(ctx, owner));
    const key = { 'idempotency-key': `"${randomUUID()}"` };
    const responses = await Promise.all(
      Array.from({ length: 8 }, () => start(fresh.relayToken, 'exactly once', key)),
    );
    const statuses = responses.map((response) => response.statusCode);
    assert.ok(
      statuses.every((status) => status === 201 || status === 409),
      statuses.join(),
    );
    const created = responses.filter((response) => response.statusCode === 201);
    assert.ok(created.length >= 1);
    const ids = new Set(created.map((response) => response.json<ThreadStarted>().thread.id));
    assert.equal(ids.size, 1, 'every 201 is the same thread');
    const [row] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from relay_threads where connection_id = ${fresh.connectionId}::uuid`;
    assert.equal(row?.n, 1);
    const replay = await start(fresh.relayToken, 'exactly once', key);
    assert.equal(replay.statusCode, 201);
    assert.deepEqual(replay.json(), created[0]?.json());
  });

  test('RLY-6: a replay returns the original status and body and writes nothing; the same key with another body is 422; keys are per relay token; a follow-up replays too', async () => {
    const key = { 'idempotency-key': `"${randomUUID()}"` };
    const first = await start(connection.relayToken, 'once', key);
    assert.equal(first.statusCode, 201, first.body);
    const before = await rowCounts();
    const replay = await start(connection.relayToken, 'once', key);
    assert.deepEqual([replay.statusCode, replay.json()], [201, first.json()]);
    assert.match(String(replay.headers['content-type']), /^application\/json/);
    const changed = await start(connection.relayToken, 'twice', key);
    assert.deepEqual(problem(changed), { status: 422, code: 'idempotency_key_reused' });
    assert.deepEqual(await rowCounts(), before);
    // The other grant's caller using the same key string starts their own thread.
    const theirs = await start(other.relayToken, 'once', key);
    assert.equal(theirs.statusCode, 201, theirs.body);
    assert.notEqual(theirs.json<ThreadStarted>().thread.id, first.json<ThreadStarted>().thread.id);

    const threadId = first.json<ThreadStarted>().thread.id;
    const followKey = { ...bearer(connection.relayToken), 'idempotency-key': `"${randomUUID()}"` };
    const url = `/relay/v1/threads/${threadId}/messages`;
    const message = await send('POST', url, followKey, { text: 'follow once' });
    assert.equal(message.statusCode, 201, message.body);
    const again = await send('POST', url, followKey, { text: 'follow once' });
    assert.deepEqual([again.statusCode, again.json()], [201, message.json()]);
    const [row] = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from relay_messages where thread_id = ${threadId}::uuid`;
    assert.equal(row?.n, 2);
    const badKey = await send(
      'POST',
      url,
      { ...bearer(connection.relayToken), 'idempotency-key': 'not-a-string' },
      {
        text: 'x',
      },
    );
    assert.deepEqual(problem(badKey), { status: 400, code: 'idempotency_key_invalid' });
  });

  test('RLY-6: a replay while the first request with the key is still in flight is 409, and nothing is written', async () => {
    const key = randomUUID();
    const fresh = await approvedConnection(ctx, owner, asker, await relayAgent(ctx, owner));
    const [grant] = await ctx.db.superuser<{ tenant_id: string }[]>`
      select tenant_id from relay_connections where id = ${fresh.connectionId}::uuid and side = 'incoming'`;
    assert.ok(grant);
    // The first request's claim, as it stands while that request runs.
    const fingerprint = requestFingerprint({
      method: 'POST',
      url: '/relay/v1/threads',
      body: { text: 'slow' },
    });
    await ctx.db.superuser`
      insert into idempotency_keys (tenant_id, scope, key, fingerprint, claim, state, lease_until, expires_at)
      values (${grant.tenant_id}::uuid, ${`relay_token:${fresh.connectionId}`}, ${key}, ${fingerprint},
              gen_random_uuid(), 'in_flight', now() + interval '1 minute', now() + interval '1 day')`;
    const before = await rowCounts();
    const response = await start(fresh.relayToken, 'slow', { 'idempotency-key': `"${key}"` });
    assert.deepEqual(problem(response), { status: 409, code: 'idempotency_request_in_flight' });
    assert.deepEqual(await rowCounts(), before);
  });
});
