import { emitThreadEvent } from '../src/callbacks/events.ts';
import { withTenant } from '../src/db/tenant.ts';
import { resolveRelayToken } from '../src/relay/connections.ts';
import { postOwnerMessage, startThread } from '../src/relay/threads.ts';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { approvedConnection, relayAgent } from '../test/helpers/relay.ts';
import { compare } from './ab.ts';

// `npm run bench -- callback-events` (RLY-7): what emitting a thread event
// costs the write that causes it. Every relay message now enqueues one
// callback_fanout job in its transaction (src/callbacks/events.ts), always,
// endpoints or not. Measured as the owner's message transaction (one
// emission, as shipped) against the same with one more emission: the drop is
// the price of one add_job inside a relay write.

export async function runCallbackEventsBench(db: TestDatabase): Promise<void> {
  const testApp = await buildTestApp(db, {}, { openApiConformance: false, passwordCost: 'production' });
  const ctx = { testApp };
  try {
    const owner = await createAccount(db, testApp);
    const asker = await createAccount(db, testApp);
    const connection = await approvedConnection(ctx, owner, asker, await relayAgent(ctx, owner));
    const grant = await resolveRelayToken(db.app, connection.relayToken);
    if (grant === undefined) throw new Error('no grant');
    const inTarget = <T>(fn: Parameters<typeof withTenant<T>>[2]) =>
      withTenant(db.app, grant.targetTenantId, fn);
    const { thread } = await inTarget((tx) => startThread(tx, grant, 'bench'));
    await compare({
      name: 'relay owner message with a second callback emission vs as shipped (one): the price of one emission',
      ratio: 'throughput',
      per: { ms: 700 },
      rounds: 8,
      aim: { atLeast: 0.7 },
      a: {
        label: 'the same plus one more emitThreadEvent',
        op: async () => {
          await inTarget(async (tx) => {
            const message = await postOwnerMessage(tx, thread.id, owner.user.id, 'an answer');
            await emitThreadEvent(tx, grant.targetTenantId, {
              type: 'thread.agent_replied',
              threadId: thread.id,
              messageId: message.id,
            });
          });
        },
      },
      b: {
        label: 'owner message transaction, as shipped (one callback_fanout enqueued)',
        op: async () => {
          await inTarget((tx) => postOwnerMessage(tx, thread.id, owner.user.id, 'an answer'));
        },
      },
    });
  } finally {
    await testApp.app.close();
  }
}
