import { randomUUID } from 'node:crypto';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { approvedConnection, relayAgent } from '../test/helpers/relay.ts';
import { compare, type Side } from './ab.ts';

// `npm run bench -- relay`: the relay's REST data plane, and its A2A
// JSON-RPC door, against an authenticated GET /api/v1/me in the same run
// (all through app.inject).
// A thread start is RLY-5's two points (token, address), the relay token's
// lookup, an Idempotency-Key claim and record, the grant held, thread and
// message inserted and the delivery job enqueued; a follow-up the same into
// an open thread. An A2A SendMessage (no task: a thread start) adds what
// /a2a/:handle does on top: the JSON-RPC parse and @a2a-js/sdk's transport,
// the messageId as the idempotency key, and the handle's card lookup (the
// agent at that handle, still published) in the write's transaction.
//
// RLY-5's production buckets stay as they are (60 starts and 120 follow-ups
// a minute per token; 600 and 1200 per address). So that they do not decide
// the figure, each request takes the next of TOKENS relay tokens (one
// approved connection each, to its own published agent) and its own client
// address (inject's remoteAddress); a 429 fails the bench rather than being
// counted as a fast answer.

const TOKENS = 240;

export async function runRelayBench(db: TestDatabase): Promise<void> {
  const testApp = await buildTestApp(db, {}, { openApiConformance: false, passwordCost: 'production' });
  const ctx = { testApp };
  try {
    const owner = await createAccount(db, testApp);
    const asker = await createAccount(db, testApp);
    const tokens: string[] = [];
    /** The handle each token's agent answers at, for /a2a/:handle. */
    const handles: string[] = [];
    const threads: string[] = [];
    for (let i = 0; i < TOKENS; i += 1) {
      const agent = await relayAgent(ctx, owner);
      const { relayToken } = await approvedConnection(ctx, owner, asker, agent);
      // Set-up, not the measure: one asker asks far past RLY-5's hourly connect bucket.
      await testApp.rateLimits.refund('relay_connect_user', asker.user.id);
      tokens.push(relayToken);
      handles.push(agent.handle);
    }
    let sent = 0;
    /** The next token (round robin) and a client address of its own for one request. */
    const next = () => {
      sent += 1;
      const at = sent % TOKENS;
      return {
        at,
        headers: { authorization: `Bearer ${tokens[at]}` },
        remoteAddress: `10.${(sent >> 16) & 255}.${(sent >> 8) & 255}.${sent & 255}`,
      };
    };
    /** POSTs `payload` with the next token and its address; `url` and `headers` are built for that token's place. */
    const postNext = async (
      url: (at: number) => string,
      payload: object,
      headers: Record<string, string> = {},
    ) => {
      const { at, headers: auth, remoteAddress } = next();
      const response = await testApp.app.inject({
        method: 'POST',
        url: url(at),
        headers: { ...auth, ...headers },
        payload,
        remoteAddress,
      });
      return { at, response };
    };
    const freshKey = () => ({ 'idempotency-key': `"${randomUUID()}"` });
    /** Starts a thread with the next token (with a fresh Idempotency-Key unless `keyed` is false): the token's place and the thread's id. */
    const startThread = async (text: string, keyed = true): Promise<{ at: number; id: string }> => {
      const { at, response } = await postNext(() => '/relay/v1/threads', { text }, keyed ? freshKey() : {});
      if (response.statusCode !== 201)
        throw new Error(`thread start: ${response.statusCode} ${response.body}`);
      return { at, id: response.json<{ thread: { id: string } }>().thread.id };
    };
    // One open thread per token, for the follow-ups.
    for (let i = 0; i < TOKENS; i += 1) {
      const started = await startThread('the open thread');
      threads[started.at] = started.id;
    }

    const me: Side = {
      label: 'GET /api/v1/me with a Bearer API token (200)',
      op: async () => {
        const response = await testApp.app.inject({
          method: 'GET',
          url: '/api/v1/me',
          headers: { authorization: `Bearer ${owner.apiToken}` },
        });
        if (response.statusCode !== 200) throw new Error(`me: ${response.statusCode}`);
      },
    };
    /** A relay operation's throughput against GET /api/v1/me's, in the same interleaved rounds. */
    const againstMe = (name: string, a: Side) =>
      compare({ name, ratio: 'throughput', per: { ms: 700 }, rounds: 8, aim: { atLeast: 0.1 }, a, b: me });
    await againstMe(
      'relay thread start (POST /relay/v1/threads, Idempotency-Key) vs authenticated GET /api/v1/me',
      {
        label: 'POST /relay/v1/threads with a relay token and an Idempotency-Key (201)',
        op: async () => {
          await startThread('hello, agent');
        },
      },
    );
    await againstMe(
      'relay thread start over A2A (POST /a2a/:handle SendMessage) vs authenticated GET /api/v1/me',
      {
        label: 'POST /a2a/:handle SendMessage with a relay token, no task (a thread start; JSON-RPC result)',
        op: async () => {
          const message = { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'hello, agent' }] };
          const { response } = await postNext(
            (at) => `/a2a/${handles[at]}`,
            { jsonrpc: '2.0', id: 1, method: 'SendMessage', params: { message } },
            { 'a2a-version': '1.0' },
          );
          // A JSON-RPC error is a 200 too: only a result counts.
          if (response.statusCode !== 200 || !('result' in response.json<object>()))
            throw new Error(`A2A SendMessage: ${response.statusCode} ${response.body}`);
        },
      },
    );
    await compare({
      name: 'relay thread start with an Idempotency-Key vs without: what the key claim and record cost',
      ratio: 'throughput',
      per: { ms: 700 },
      rounds: 8,
      aim: { atLeast: 0.6 },
      a: {
        label: 'POST /relay/v1/threads with an Idempotency-Key (201)',
        op: async () => {
          await startThread('hello, agent');
        },
      },
      b: {
        label: 'POST /relay/v1/threads without one (201)',
        op: async () => {
          await startThread('hello, agent', false);
        },
      },
    });
    await againstMe(
      'relay follow-up (POST /relay/v1/threads/:id/messages, Idempotency-Key) vs authenticated GET /api/v1/me',
      {
        label: 'POST /relay/v1/threads/:id/messages with a relay token and an Idempotency-Key (201)',
        op: async () => {
          const { response } = await postNext(
            (at) => `/relay/v1/threads/${threads[at]}/messages`,
            { text: 'and one more thing' },
            freshKey(),
          );
          if (response.statusCode !== 201)
            throw new Error(`follow-up: ${response.statusCode} ${response.body}`);
        },
      },
    );
  } finally {
    await testApp.app.close();
  }
}
