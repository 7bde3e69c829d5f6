// The relay as A2A JSON-RPC at /a2a/:handle, driven by the real @a2a-js/sdk client over a listening port.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { type Message, Role, type Task, TaskState } from '@a2a-js/sdk';
import { type Client, ClientFactory } from '@a2a-js/sdk/client';
import { createAccount, randomClientIp, type TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { exhaustBucket } from '../../test/helpers/rate-limits.ts';
import {
  type ApprovedConnection,
  approvedConnection,
  type RelayAgent,
  relayAgent,
} from '../../test/helpers/relay.ts';
import { withTenant } from '../db/tenant.ts';
import { freePort } from '../free-port.ts';
import { RateLimitedError } from '../http/rate-limits.ts';
import { hashToken } from '../tokens.ts';
import { NOT_FOUND_MESSAGE } from './a2a-handler.ts';
import { MAX_MESSAGE_BYTES, mintThreadToken, recordAgentAnswer } from './threads.ts';

// The card names the public URL as the endpoint: the app listens on the port that URL names.
const port = await freePort();
const ctx = useTestApp({ ENCLAVE_PORT: String(port) });
/** The target's owner, the caller with an approved grant, and a third tenant. */
let owner: TestAccount;
let asker: TestAccount;
let other: TestAccount;
let target: RelayAgent;
let connection: ApprovedConnection;

ctx.before(async () => {
  [owner, asker, other] = await Promise.all([
    createAccount(ctx.db, ctx.testApp),
    createAccount(ctx.db, ctx.testApp),
    createAccount(ctx.db, ctx.testApp),
  ]);
  target = await relayAgent(ctx, owner);
  connection = await approvedConnection(ctx, owner, asker, target);
  await ctx.testApp.app.listen({ port, host: '127.0.0.1' });
});
ctx.after(() => ctx.testApp.app.server.closeAllConnections());

const bearer = (token: string) => ({ serviceParameters: { authorization: `Bearer ${token}` } });

function userMessage(text: string, threadId = ''): Message {
  return {
    messageId: randomUUID(),
    contextId: threadId,
    taskId: threadId,
    role: Role.ROLE_USER,
    parts: [
      { content: { $case: 'text', value: text }, metadata: undefined, filename: '', mediaType: 'text/plain' },
    ],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  };
}

const send = (message: Message) => ({ tenant: '', message, configuration: undefined, metadata: undefined });

async function discover(handle: string): Promise<Client> {
  // The card's well-known path resolves against the endpoint as a directory: hence the slash.
  return new ClientFactory().createFromUrl(`${ctx.testApp.config.publicUrl}/a2a/${handle}/`);
}

function asTask(result: Message | Task): Task {
  assert.ok('status' in result, 'SendMessage answers a task');
  return result;
}

const texts = (task: Task) =>
  task.history.map((message) => [
    message.role,
    message.parts.map((part) => (part.content?.$case === 'text' ? part.content.value : '')).join(''),
  ]);

const threadToken = async (account: TestAccount, threadId: string) =>
  (
    await withTenant(ctx.db.app, account.user.tenant_id, (tx) =>
      mintThreadToken(tx, account.principal, threadId),
    )
  ).token;

const answerAs = (threadId: string, messageId: string, text: string) =>
  withTenant(ctx.db.app, owner.user.tenant_id, (tx) => recordAgentAnswer(tx, threadId, messageId, text));

const threadCount = async () =>
  (await ctx.db.superuser<{ n: number }[]>`select count(*)::int as n from relay_threads`)[0]?.n ?? 0;
const messageCount = async () =>
  (await ctx.db.superuser<{ n: number }[]>`select count(*)::int as n from relay_messages`)[0]?.n ?? 0;

/** A raw JSON-RPC call (what a client without the SDK sends). */
function rpc(handle: string, body: unknown, token?: string, headers: Record<string, string> = {}) {
  return ctx.testApp.app.inject({
    method: 'POST',
    url: `/a2a/${handle}`,
    headers: {
      'content-type': 'application/json',
      'a2a-version': '1.0',
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      ...headers,
    },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

const sendBody = (text: string, threadId = '') => ({
  jsonrpc: '2.0',
  id: 7,
  method: 'SendMessage',
  params: {
    message: {
      messageId: randomUUID(),
      role: 'ROLE_USER',
      parts: [{ text }],
      ...(threadId === '' ? {} : { taskId: threadId }),
    },
  },
});

describe('A2A JSON-RPC at /a2a/:handle', () => {
  test('RLY-3: the @a2a-js/sdk client discovers the card, starts a thread with the relay token, follows up and cancels; RLY-4: it reads the reply with a thread token', async () => {
    const client = await discover(target.handle);
    const started = asTask(
      await client.sendMessage(send(userMessage('hello agent')), bearer(connection.relayToken)),
    );
    assert.equal(started.contextId, started.id);
    assert.equal(started.status?.state, TaskState.TASK_STATE_SUBMITTED);
    assert.deepEqual(texts(started), [[Role.ROLE_USER, 'hello agent']]);
    const first = started.history[0];
    assert.ok(first);

    // The delivery job writes the agent's answer; here the test does.
    await answerAs(started.id, first.messageId, 'hello caller');
    const token = await threadToken(asker, started.id);
    const read = await client.getTask({ tenant: '', id: started.id }, bearer(token));
    assert.equal(read.status?.state, TaskState.TASK_STATE_INPUT_REQUIRED);
    assert.deepEqual(texts(read), [
      [Role.ROLE_USER, 'hello agent'],
      [Role.ROLE_AGENT, 'hello caller'],
    ]);

    const followed = asTask(
      await client.sendMessage(send(userMessage('and again', started.id)), bearer(connection.relayToken)),
    );
    assert.equal(followed.id, started.id);
    assert.equal(followed.status?.state, TaskState.TASK_STATE_SUBMITTED);
    assert.deepEqual(texts(followed), [[Role.ROLE_USER, 'and again']]);
    const recent = await client.getTask({ tenant: '', id: started.id, historyLength: 1 }, bearer(token));
    assert.deepEqual(texts(recent), [[Role.ROLE_USER, 'and again']]);

    const canceled = await client.cancelTask(
      { tenant: '', id: started.id, metadata: undefined },
      bearer(token),
    );
    assert.equal(canceled.status?.state, TaskState.TASK_STATE_CANCELED);
    await assert.rejects(
      client.sendMessage(send(userMessage('after the end', started.id)), bearer(connection.relayToken)),
      (error: Error) => error.name === 'UnsupportedOperationError',
    );
  });

  test('RLY-3: an A2A 0.3 client (message/send, tasks/get, no A2A-Version) reaches the same threads', async () => {
    const sent = await rpc(
      target.handle,
      {
        jsonrpc: '2.0',
        id: 'a',
        method: 'message/send',
        params: {
          message: {
            kind: 'message',
            messageId: randomUUID(),
            role: 'user',
            parts: [{ kind: 'text', text: 'old style' }],
          },
        },
      },
      connection.relayToken,
      { 'a2a-version': '0.3' },
    );
    assert.equal(sent.statusCode, 200, sent.body);
    const task = sent.json<{ result: { id: string; kind: string; status: { state: string } } }>().result;
    assert.deepEqual([task.kind, task.status.state], ['task', 'submitted']);
    const read = await rpc(
      target.handle,
      { jsonrpc: '2.0', id: 'b', method: 'tasks/get', params: { id: task.id } },
      await threadToken(owner, task.id),
      { 'a2a-version': '0.3' },
    );
    assert.equal(read.statusCode, 200, read.body);
    assert.equal(read.json<{ result: { id: string } }>().result.id, task.id);
  });

  test('RLY-2: unknown and unpublished handles, another handle, kind or grant of token, a revoked token: one identical answer, nothing written', async () => {
    const unknown = await rpc(`nobody-${randomUUID().slice(0, 8)}`, sendBody('hi'), connection.relayToken);
    assert.equal(unknown.statusCode, 200);
    assert.deepEqual(unknown.json<{ error: { code: number; message: string } }>().error.code, -32001);
    assert.equal(unknown.json<{ error: { message: string } }>().error.message, NOT_FOUND_MESSAGE);

    // A published agent of the same owner the token was not approved for.
    const neighbour = await relayAgent(ctx, owner);
    // An approved grant whose agent is then unpublished.
    const hidden = await relayAgent(ctx, owner);
    const hiddenGrant = await approvedConnection(ctx, owner, asker, hidden);
    const unpublished = await ctx.testApp.app.inject({
      method: 'PUT',
      url: `/api/v1/agents/${hidden.id}/card`,
      headers: { authorization: `Bearer ${owner.apiToken}` },
      payload: { published: false },
    });
    assert.equal(unpublished.statusCode, 200);
    // A grant revoked by the owner.
    const revokedGrant = await approvedConnection(ctx, owner, other, target);
    const revoked = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/api/v1/connections/${revokedGrant.connectionId}/revoke`,
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    assert.equal(revoked.statusCode, 200, revoked.body);
    // Another grant's thread, and a thread token of it.
    const otherGrant = await approvedConnection(ctx, owner, other, target);
    const theirs = await rpc(target.handle, sendBody('theirs'), otherGrant.relayToken);
    assert.equal(theirs.statusCode, 200, theirs.body);
    const theirThread = theirs.json<{ result: { task: { id: string } } }>().result.task.id;
    const mine = await rpc(target.handle, sendBody('mine'), connection.relayToken);
    const myThread = mine.json<{ result: { task: { id: string } } }>().result.task.id;
    const myToken = await threadToken(asker, myThread);

    const threads = await threadCount();
    const messages = await messageCount();
    const probes = [
      rpc(neighbour.handle, sendBody('hi'), connection.relayToken),
      rpc(hidden.handle, sendBody('hi'), hiddenGrant.relayToken),
      rpc(target.handle, sendBody('hi'), revokedGrant.relayToken),
      rpc(target.handle, sendBody('hi'), myToken),
      rpc(target.handle, sendBody('hi'), owner.apiToken),
      rpc(target.handle, sendBody('hi'), 'enc_relay_not-a-real-token'),
      rpc(target.handle, sendBody('into theirs', theirThread), connection.relayToken),
      rpc(target.handle, sendBody('not a uuid', 'nope'), connection.relayToken),
      rpc(target.handle, { jsonrpc: '2.0', id: 7, method: 'GetTask', params: { id: theirThread } }, myToken),
      rpc(
        target.handle,
        { jsonrpc: '2.0', id: 7, method: 'GetTask', params: { id: myThread } },
        connection.relayToken,
      ),
      rpc(neighbour.handle, { jsonrpc: '2.0', id: 7, method: 'GetTask', params: { id: myThread } }, myToken),
      rpc(
        target.handle,
        { jsonrpc: '2.0', id: 7, method: 'CancelTask', params: { id: theirThread } },
        myToken,
      ),
    ];
    for (const answer of await Promise.all(probes)) {
      assert.equal(answer.statusCode, unknown.statusCode, answer.body);
      assert.deepEqual(answer.json(), unknown.json());
    }
    assert.equal(await threadCount(), threads);
    assert.equal(await messageCount(), messages);
  });

  test('RLY-4: GetTask and CancelTask take a thread token only; the relay token, which writes, reads nothing', async () => {
    const started = await rpc(target.handle, sendBody('read me'), connection.relayToken);
    const threadId = started.json<{ result: { task: { id: string } } }>().result.task.id;
    const withRelay = await rpc(
      target.handle,
      { jsonrpc: '2.0', id: 1, method: 'CancelTask', params: { id: threadId } },
      connection.relayToken,
    );
    assert.equal(withRelay.json<{ error: { code: number } }>().error.code, -32001);
    const ownerToken = await threadToken(owner, threadId);
    const read = await rpc(
      target.handle,
      { jsonrpc: '2.0', id: 1, method: 'GetTask', params: { id: threadId } },
      ownerToken,
    );
    assert.equal(read.statusCode, 200, read.body);
    assert.equal(
      read.json<{ result: { status: { state: string } } }>().result.status.state,
      'TASK_STATE_SUBMITTED',
    );
  });

  test('RLY-3: invalid JSON-RPC, oversized and non-text messages, streaming and push are refused with their JSON-RPC error codes, never a 500, writing nothing', async () => {
    const threads = await threadCount();
    // JSON-RPC errors are answers: 200, as the SDK's JSON-RPC server sends them.
    const code = async (answer: Awaited<ReturnType<typeof rpc>>) => {
      assert.equal(answer.statusCode, 200, answer.body);
      return answer.json<{ error: { code: number } }>().error.code;
    };
    const token = connection.relayToken;
    assert.equal(await code(await rpc(target.handle, '{"jsonrpc": "2.0",', token)), -32700);
    assert.equal(await code(await rpc(target.handle, '{"__proto__": {}}', token)), -32700);
    assert.equal(await code(await rpc(target.handle, { ...sendBody('x'), jsonrpc: '1.0' }, token)), -32600);
    assert.equal(await code(await rpc(target.handle, [sendBody('x')], token)), -32600);
    assert.equal(await code(await rpc(target.handle, { ...sendBody('x'), method: 'Nope' }, token)), -32601);
    assert.equal(await code(await rpc(target.handle, { ...sendBody('x'), params: [1] }, token)), -32602);
    assert.equal(await code(await rpc(target.handle, { ...sendBody('x'), params: {} }, token)), -32602);
    const big = 'x'.repeat(MAX_MESSAGE_BYTES + 1);
    assert.equal(await code(await rpc(target.handle, sendBody(big), token)), -32602);
    const data = sendBody('x');
    data.params.message.parts = [{ data: { a: 1 } } as unknown as { text: string }];
    assert.equal(await code(await rpc(target.handle, data, token)), -32602);
    assert.equal(
      await code(await rpc(target.handle, { ...sendBody('x'), method: 'SendStreamingMessage' }, token)),
      -32004,
    );
    assert.equal(
      await code(
        await rpc(
          target.handle,
          { jsonrpc: '2.0', id: 1, method: 'SubscribeToTask', params: { id: randomUUID() } },
          token,
        ),
      ),
      -32004,
    );
    assert.equal(
      await code(
        await rpc(
          target.handle,
          {
            jsonrpc: '2.0',
            id: 1,
            method: 'ListTaskPushNotificationConfigs',
            params: { taskId: randomUUID() },
          },
          token,
        ),
      ),
      -32003,
    );
    assert.equal(
      await code(await rpc(target.handle, sendBody('x'), token, { 'a2a-version': '9.9' })),
      -32009,
    );
    const huge = await rpc(target.handle, sendBody('x'.repeat(1024 * 1024)), token);
    assert.equal(huge.statusCode, 413);
    assert.equal(await threadCount(), threads);
  });

  test('RLY-3: once the owner revokes, the next SendMessage is refused as unknown and the task reads as rejected', async () => {
    const caller = await createAccount(ctx.db, ctx.testApp);
    const revocable = await approvedConnection(ctx, owner, caller, target);
    const started = await rpc(target.handle, sendBody('before'), revocable.relayToken);
    const threadId = started.json<{ result: { task: { id: string } } }>().result.task.id;
    const token = await threadToken(caller, threadId);
    const revoked = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/api/v1/connections/${revocable.connectionId}/revoke`,
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    assert.equal(revoked.statusCode, 200, revoked.body);
    const after = await rpc(target.handle, sendBody('after', threadId), revocable.relayToken);
    assert.equal(after.json<{ error: { code: number } }>().error.code, -32001);
    const read = await rpc(
      target.handle,
      { jsonrpc: '2.0', id: 1, method: 'GetTask', params: { id: threadId } },
      token,
    );
    assert.equal(
      read.json<{ result: { status: { state: string } } }>().result.status.state,
      'TASK_STATE_REJECTED',
    );
  });

  test('RLY-5: past its bucket, SendMessage answers 429 with Retry-After and writes nothing', async () => {
    const limited = await approvedConnection(ctx, owner, await createAccount(ctx.db, ctx.testApp), target);
    const key = hashToken(limited.relayToken).toString('hex');
    await assert.rejects(async () => {
      for (let spent = 0; spent <= 60; spent += 1) {
        await ctx.testApp.rateLimits.consume('relay_thread_start_token', key);
      }
    }, RateLimitedError);
    const threads = await threadCount();
    const answer = await rpc(target.handle, sendBody('one too many'), limited.relayToken);
    assert.equal(answer.statusCode, 429, answer.body);
    assert.ok(Number(answer.headers['retry-after']) > 0);
    assert.equal(answer.json<{ code: string }>().code, 'rate_limited');
    assert.equal(await threadCount(), threads);
  });

  test('RLY-5: past its read bucket (relay_read_token, or relay_read_ip for its address), GetTask and CancelTask answer 429 with Retry-After before any lookup, and the task is left as it was', async () => {
    const started = await rpc(target.handle, sendBody('read me later'), connection.relayToken);
    const threadId = started.json<{ result: { task: { id: string } } }>().result.task.id;
    const limitedToken = await threadToken(asker, threadId);
    await exhaustBucket(ctx.db, 'relay_read_token', hashToken(limitedToken).toString('hex'));
    const address = randomClientIp();
    await exhaustBucket(ctx.db, 'relay_read_ip', address);
    const freshToken = await threadToken(asker, threadId);
    const call = (method: string, token: string, remoteAddress = randomClientIp()) =>
      ctx.testApp.app.inject({
        method: 'POST',
        url: `/a2a/${target.handle}`,
        remoteAddress,
        headers: {
          'content-type': 'application/json',
          'a2a-version': '1.0',
          authorization: `Bearer ${token}`,
        },
        payload: { jsonrpc: '2.0', id: 1, method, params: { id: threadId } },
      });
    for (const method of ['GetTask', 'CancelTask']) {
      for (const [why, answer] of [
        ['token', await call(method, limitedToken)],
        ['address', await call(method, freshToken, address)],
      ] as const) {
        assert.equal(answer.statusCode, 429, `${method} (${why}): ${answer.body}`);
        assert.equal(answer.json<{ code: string }>().code, 'rate_limited');
        assert.ok(Number(answer.headers['retry-after']) > 0, `${method} (${why}): Retry-After`);
      }
    }
    const [thread] = await ctx.db.superuser<{ state: string }[]>`
      select state from relay_threads where id = ${threadId}::uuid`;
    assert.equal(thread?.state, 'open', 'a refused CancelTask closed nothing');
    const read = await call('GetTask', freshToken);
    assert.equal(read.statusCode, 200, read.body);
  });

  test('RLY-6: a replayed messageId (concurrent replays too) or Idempotency-Key answers the first task and creates nothing more', async () => {
    const client = await discover(target.handle);
    const message = userMessage('only once');
    const first = asTask(await client.sendMessage(send(message), bearer(connection.relayToken)));
    const threads = await threadCount();
    const messages = await messageCount();
    const again = asTask(await client.sendMessage(send(message), bearer(connection.relayToken)));
    assert.equal(again.id, first.id);
    assert.deepEqual(texts(again), texts(first));
    // The same messageId with other words is a different request: refused, not replayed.
    await assert.rejects(
      client.sendMessage(
        send({ ...message, parts: userMessage('other words').parts }),
        bearer(connection.relayToken),
      ),
      (error: Error) => error.name === 'RequestMalformedError',
    );

    // Concurrent replays of one messageId: one thread; each answer is the task or a 409 while the first runs.
    const raced = sendBody('raced');
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => rpc(target.handle, raced, connection.relayToken)),
    );
    const tasks = answers.filter((answer) => answer.statusCode === 200);
    assert.ok(tasks.length >= 1);
    assert.ok(answers.every((answer) => answer.statusCode === 200 || answer.statusCode === 409));
    assert.equal(
      new Set(tasks.map((answer) => answer.json<{ result: { task: { id: string } } }>().result.task.id)).size,
      1,
    );
    assert.equal(await threadCount(), threads + 1);

    const key = { 'idempotency-key': `"${randomUUID()}"` };
    const body = sendBody('keyed');
    const keyed = await rpc(target.handle, body, connection.relayToken, key);
    const replay = await rpc(target.handle, body, connection.relayToken, key);
    assert.equal(keyed.statusCode, 200, keyed.body);
    assert.deepEqual(replay.json(), keyed.json());
    assert.equal(await threadCount(), threads + 2);
    assert.equal(await messageCount(), messages + 2);
  });
});
