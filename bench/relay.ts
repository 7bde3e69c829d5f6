import { randomUUID } from 'node:crypto';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { approvedConnection, relayAgent } from '../test/helpers/relay.ts';
import { compare } from './ab.ts';

// `npm run bench -- relay`: the relay's REST data plane against an
// authenticated GET /api/v1/me in the same run (both through app.inject).
// A thread start is RLY-5's two points (token, address), the relay token's
// lookup, an Idempotency-Key claim and record, the grant held, thread and
// message inserted and the delivery job enqueued; a follow-up the same into
// an open thread.
//
// RLY-5's production buckets stay as they are (60 starts and 120 follow-ups
// a minute per token; 600 and 1200 per address). So that they do not decide
// the figure, each request takes the next of TOKENS relay tokens (one
// approved connection each, to its own published agent) and its own client
// address (inject's remoteAddress); a 429 fails the bench rather than being
// counted as a fast answer.

const TOKENS = 240;

export async function runRelayBench(db: TestDatabase): Promise<void> {
  const testApp = await buildTestApp(db, {}, { openApiConformance: false });
  const ctx = { testApp };
  try {
    const owner = await createAccount(db, testApp);
    const asker = await createAccount(db, testApp);
    const tokens: string[] = [];
    const threads: string[] = [];
    for (let i = 0; i < TOKENS; i += 1) {
      const { relayToken } = await approvedConnection(ctx, owner, asker, await relayAgent(ctx, owner));
      // Set-up, not the measure: one asker asks far past RLY-5's hourly connect bucket.
      await testApp.rateLimits.refund('relay_connect_user', asker.user.id);
      tokens.push(relayToken);
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
    /** Starts a thread with the next token (with a fresh Idempotency-Key unless `keyed` is false): the token's place and the thread's id. */
    const startThread = async (text: string, keyed = true): Promise<{ at: number; id: string }> => {
      const { at, headers, remoteAddress } = next();
      const response = await testApp.app.inject({
        method: 'POST',
        url: '/relay/v1/threads',
        headers: keyed ? { ...headers, 'idempotency-key': `"${randomUUID()}"` } : headers,
        payload: { text },
        remoteAddress,
      });
      if (response.statusCode !== 201)
        throw new Error(`thread start: ${response.statusCode} ${response.body}`);
      return { at, id: response.json<{ thread: { id: string } }>().thread.id };
    };
    // One open thread per token, for the follow-ups.
    for (let i = 0; i < TOKENS; i += 1) {
      const started = await startThread('the open thread');
      threads[started.at] = started.id;
    }

    const me = {
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
    await compare({
      name: 'relay thread start (POST /relay/v1/threads, Idempotency-Key) vs authenticated GET /api/v1/me',
      ratio: 'throughput',
      per: { ms: 700 },
      rounds: 8,
      aim: { atLeast: 0.1 },
      a: {
        label: 'POST /relay/v1/threads with a relay token and an Idempotency-Key (201)',
        op: async () => {
          await startThread('hello, agent');
        },
      },
      b: me,
    });
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
    await compare({
      name: 'relay follow-up (POST /relay/v1/threads/:id/messages, Idempotency-Key) vs authenticated GET /api/v1/me',
      ratio: 'throughput',
      per: { ms: 700 },
      rounds: 8,
      aim: { atLeast: 0.1 },
      a: {
        label: 'POST /relay/v1/threads/:id/messages with a relay token and an Idempotency-Key (201)',
        op: async () => {
          const { at, headers, remoteAddress } = next();
          const response = await testApp.app.inject({
            method: 'POST',
            url: `/relay/v1/threads/${threads[at]}/messages`,
            headers: { ...headers, 'idempotency-key': `"${randomUUID()}"` },
            payload: { text: 'and one more thing' },
            remoteAddress,
          });
          if (response.statusCode !== 201)
            throw new Error(`follow-up: ${response.statusCode} ${response.body}`);
        },
      },
      b: me,
    });
  } finally {
    await testApp.app.close();
  }
}
