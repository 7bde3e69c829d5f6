// The thread store under the data plane: who may write where, one answer per message, revoke closing threads, thread tokens that expire.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { TestAccount } from '../../test/helpers/accounts.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import {
  type ApprovedConnection,
  approvedConnection,
  type RelayAgent,
  relayAgent,
  relayParties,
} from '../../test/helpers/relay.ts';
import { withTenant } from '../db/tenant.ts';
import { type RelayGrant, resolveRelayToken } from './connections.ts';
import {
  closeThread,
  getThread,
  listMessages,
  MAX_MESSAGE_BYTES,
  mintThreadToken,
  postCallerMessage,
  postOwnerMessage,
  recordAgentAnswer,
  resolveThreadToken,
  startThread,
} from './threads.ts';

const ctx = useTestApp();
let owner: TestAccount;
let asker: TestAccount;
let stranger: TestAccount;
let target: RelayAgent;
let connection: ApprovedConnection;
let grant: RelayGrant;

ctx.before(async () => {
  ({ owner, asker, stranger, target, connection, grant } = await relayParties(ctx));
});

const asTarget = <T>(fn: Parameters<typeof withTenant<T>>[2]) =>
  withTenant(ctx.db.app, grant.targetTenantId, fn);

const deliveryJobs = async (messageId: string) =>
  (
    await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count
      from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
      where t.identifier = 'relay_deliver' and j.payload->>'message_id' = ${messageId}`
  )[0]?.count;

describe('threads', () => {
  test('RLY-3: a thread started over an approved grant holds the caller message, queued, with its delivery job in the same commit', async () => {
    const { thread, message } = await asTarget((tx) => startThread(tx, grant, 'hello there'));
    assert.equal(thread.state, 'open');
    assert.equal(thread.message_count, 1);
    assert.equal(thread.agent_id, target.id);
    assert.deepEqual(
      [message.seq, message.author, message.delivery, message.body],
      [1, 'caller', 'queued', 'hello there'],
    );
    assert.equal(await deliveryJobs(message.id), 1);
  });

  test('RLY-3: a message over the documented limit is refused before anything is written', async () => {
    const before = await ctx.db.superuser<{ n: number }[]>`select count(*)::int as n from relay_threads`;
    await assert.rejects(
      asTarget((tx) => startThread(tx, grant, 'x'.repeat(MAX_MESSAGE_BYTES + 1))),
      (error: Error & { code?: string }) => error.code === 'message_too_large',
    );
    const after = await ctx.db.superuser<{ n: number }[]>`select count(*)::int as n from relay_threads`;
    assert.deepEqual(after, before);
  });

  test('RLY-3: a follow-up goes only into an open thread of the same grant', async () => {
    const { thread } = await asTarget((tx) => startThread(tx, grant, 'first'));
    const second = await asTarget((tx) => postCallerMessage(tx, grant, thread.id, 'second'));
    assert.equal(second.seq, 2);
    const other = await approvedConnection(ctx, owner, stranger, target);
    const otherGrant = await resolveRelayToken(ctx.db.app, other.relayToken);
    assert.ok(otherGrant);
    await assert.rejects(
      asTarget((tx) => postCallerMessage(tx, otherGrant, thread.id, 'not yours')),
      (error: Error & { code?: string }) => error.code === 'not_found',
    );
    await asTarget((tx) => closeThread(tx, thread.id));
    await assert.rejects(
      asTarget((tx) => postCallerMessage(tx, grant, thread.id, 'after close')),
      (error: Error & { code?: string }) => error.code === 'thread_state',
    );
  });

  test('RLY-3: an agent answer is recorded once per caller message, however often delivery retries', async () => {
    const { thread, message } = await asTarget((tx) => startThread(tx, grant, 'ping'));
    const first = await asTarget((tx) => recordAgentAnswer(tx, thread.id, message.id, 'pong'));
    const again = await asTarget((tx) => recordAgentAnswer(tx, thread.id, message.id, 'pong again'));
    assert.equal(again?.id, first?.id);
    const messages = await asTarget((tx) => listMessages(tx, thread.id, { afterSeq: 0, limit: 10 }));
    assert.deepEqual(
      messages.map((m) => [m.author, m.body]),
      [
        ['caller', 'ping'],
        ['agent', 'pong'],
      ],
    );
  });

  test('RLY-3: revoking the connection marks its open threads revoked and refuses the next write', async () => {
    const target2 = await relayAgent(ctx, owner);
    const revocable = await approvedConnection(ctx, owner, asker, target2);
    const revocableGrant = await resolveRelayToken(ctx.db.app, revocable.relayToken);
    assert.ok(revocableGrant);
    const { thread } = await asTarget((tx) => startThread(tx, revocableGrant, 'soon revoked'));
    const revoked = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/api/v1/connections/${revocable.connectionId}/revoke`,
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    assert.equal(revoked.statusCode, 200, revoked.body);
    assert.equal((await asTarget((tx) => getThread(tx, thread.id))).state, 'revoked');
    assert.equal(await resolveRelayToken(ctx.db.app, revocable.relayToken), undefined);
    // Even a grant resolved before the revoke is refused by the write itself.
    await assert.rejects(
      asTarget((tx) => startThread(tx, revocableGrant, 'too late')),
      (error: Error & { code?: string }) => error.code === 'not_found',
    );
  });

  test('RLY-4: the owner and the participant each mint a 60-minute thread token; a stranger cannot, and an expired one opens nothing', async () => {
    const { thread } = await asTarget((tx) => startThread(tx, grant, 'tokens'));
    const own = await withTenant(ctx.db.app, owner.user.tenant_id, (tx) =>
      mintThreadToken(tx, owner.principal, thread.id),
    );
    const theirs = await withTenant(ctx.db.app, asker.user.tenant_id, (tx) =>
      mintThreadToken(tx, asker.principal, thread.id),
    );
    assert.equal(own.holder, 'owner');
    assert.equal(theirs.holder, 'participant');
    assert.ok(own.expires_at.getTime() - Date.now() <= 60 * 60_000);
    assert.deepEqual(await resolveThreadToken(ctx.db.app, theirs.token), {
      tenantId: grant.targetTenantId,
      threadId: thread.id,
      holder: 'participant',
      mintedBy: asker.user.id,
    });
    await assert.rejects(
      withTenant(ctx.db.app, stranger.user.tenant_id, (tx) =>
        mintThreadToken(tx, stranger.principal, thread.id),
      ),
      (error: Error & { code?: string }) => error.code === 'not_found',
    );
    assert.equal(await resolveThreadToken(ctx.db.app, connection.relayToken), undefined);
    await ctx.db.superuser`update relay_thread_tokens set created_at = now() - interval '61 minutes',
      expires_at = now() - interval '1 minute' where thread_id = ${thread.id}::uuid`;
    assert.equal(await resolveThreadToken(ctx.db.app, own.token), undefined);
  });

  test('RLY-4: the owner answers in an open thread as owner; the message names its author', async () => {
    const { thread } = await asTarget((tx) => startThread(tx, grant, 'anyone there?'));
    const answer = await asTarget((tx) => postOwnerMessage(tx, thread.id, owner.user.id, 'yes, a person'));
    assert.deepEqual([answer.author, answer.seq, answer.delivery], ['owner', 2, null]);
  });
});
