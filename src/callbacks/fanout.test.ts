// Thread events become callback deliveries (RLY-7): each event enqueues one
// callback_fanout job in its own transaction; the job makes one delivery per
// subscribed, enabled endpoint on each side of the relay, each with its
// callback_deliver job, and running it again makes nothing more.
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
import { decideConnection, type RelayGrant, resolveRelayToken } from '../relay/connections.ts';
import { closeThread, postOwnerMessage, recordAgentAnswer, startThread } from '../relay/threads.ts';
import { CALLBACK_FANOUT_TASK } from './events.ts';
import { type CallbackPayload, fanoutCallbackEvent } from './fanout.ts';

const ctx = useTestApp();
let owner: TestAccount;
let asker: TestAccount;
let stranger: TestAccount;
let agent: RelayAgent;
let connection: ApprovedConnection;
let grant: RelayGrant;

ctx.before(async () => {
  ({ owner, asker, stranger, target: agent, connection, grant } = await relayParties(ctx));
});

const asTarget = <T>(fn: Parameters<typeof withTenant<T>>[2]) =>
  withTenant(ctx.db.app, grant.targetTenantId, fn);

async function register(account: TestAccount, body: object): Promise<string> {
  const created = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/api/v1/webhook-endpoints',
    headers: { authorization: `Bearer ${account.apiToken}` },
    payload: { url: 'https://93.184.215.14/events', ...body },
  });
  assert.equal(created.statusCode, 201, created.body);
  return created.json<{ id: string }>().id;
}

interface FanoutJob {
  payload: Record<string, unknown>;
  key: string | null;
}

/** The callback_fanout jobs of a thread, oldest first. */
const fanoutJobs = (threadId: string) =>
  ctx.db.superuser<FanoutJob[]>`
    select j.payload, j.key from graphile_worker._private_jobs j
    join graphile_worker._private_tasks t on t.id = j.task_id
    where t.identifier = ${CALLBACK_FANOUT_TASK} and j.payload->>'thread_id' = ${threadId}
    order by j.id`;

const deliveriesOf = (endpointId: string) =>
  ctx.db.superuser<
    { id: string; tenant_id: string; event_type: string; webhook_id: string; payload: string }[]
  >`
    select id, tenant_id, event_type, webhook_id, payload from callback_deliveries
    where endpoint_id = ${endpointId}::uuid order by created_at, id`;

const deliverJobs = (deliveryId: string) =>
  ctx.db.superuser<FanoutJob[]>`
    select j.payload, j.key from graphile_worker._private_jobs j
    join graphile_worker._private_tasks t on t.id = j.task_id
    where t.identifier = 'callback_deliver' and j.payload->>'delivery_id' = ${deliveryId}`;

describe('callback events and fan-out', () => {
  test('RLY-7: each thread event enqueues one callback_fanout job keyed by its new event id, in its own transaction', async () => {
    const { thread, message } = await asTarget((tx) => startThread(tx, grant, 'hello'));
    await asTarget((tx) => recordAgentAnswer(tx, thread.id, message.id, 'hi back'));
    await asTarget((tx) => postOwnerMessage(tx, thread.id, owner.user.id, 'the owner adds'));
    await asTarget((tx) => closeThread(tx, thread.id));
    const jobs = await fanoutJobs(thread.id);
    assert.deepEqual(
      jobs.map((job) => job.payload.type),
      ['thread.message_received', 'thread.agent_replied', 'thread.agent_replied', 'thread.closed'],
    );
    for (const job of jobs) {
      assert.equal(job.key, `${CALLBACK_FANOUT_TASK}:${String(job.payload.event_id)}`);
      assert.equal(job.payload.tenant_id, grant.targetTenantId);
    }
    // A rolled-back message leaves no event behind (OPS-2).
    await assert.rejects(
      asTarget(async (tx) => {
        await postOwnerMessage(tx, thread.id, owner.user.id, 'never');
        throw new Error('roll back');
      }),
    );
    assert.equal((await fanoutJobs(thread.id)).length, 4);
  });

  test('RLY-7: a message makes exactly one delivery per subscribed endpoint on each side, none for others; re-running makes nothing more', async () => {
    const ownerSide = await register(owner, { agent_id: agent.id, event_types: ['thread.message_received'] });
    const callerSide = await register(asker, {
      connection_id: connection.connectionId,
      event_types: ['thread.message_received', 'thread.agent_replied'],
    });
    const unsubscribed = await register(owner, { agent_id: agent.id, event_types: ['thread.closed'] });
    const disabled = await register(owner, { agent_id: agent.id, event_types: ['thread.message_received'] });
    await ctx.db.superuser`
      update callback_endpoints set state = 'disabled', disabled_reason = 'test' where id = ${disabled}::uuid`;
    // Another tenant's endpoint on an agent of its own: never reached by this thread.
    const elsewhere = await relayAgent(ctx, stranger, false);
    const foreign = await register(stranger, {
      agent_id: elsewhere.id,
      event_types: ['thread.message_received'],
    });

    const { thread, message } = await asTarget((tx) => startThread(tx, grant, 'deliver me'));
    const [job] = await fanoutJobs(thread.id);
    assert.ok(job);
    await fanoutCallbackEvent(ctx.db.app, job.payload);
    await fanoutCallbackEvent(ctx.db.app, job.payload);

    const [own, ...moreOwn] = await deliveriesOf(ownerSide);
    const [theirs, ...moreTheirs] = await deliveriesOf(callerSide);
    assert.ok(own && theirs);
    assert.deepEqual([moreOwn.length, moreTheirs.length], [0, 0]);
    for (const id of [unsubscribed, disabled, foreign]) assert.equal((await deliveriesOf(id)).length, 0);
    assert.equal(own.tenant_id, grant.targetTenantId);
    assert.equal(theirs.tenant_id, grant.requesterTenantId);
    assert.match(own.webhook_id, /^msg_[0-9a-f]{32}$/);
    assert.notEqual(own.webhook_id, theirs.webhook_id);

    const body = JSON.parse(theirs.payload) as CallbackPayload;
    assert.equal(body.type, 'thread.message_received');
    assert.ok(!Number.isNaN(Date.parse(body.timestamp)));
    assert.deepEqual(body.data, {
      thread_id: thread.id,
      connection_id: connection.connectionId,
      agent_handle: agent.handle,
      state: 'open',
      message_id: message.id,
      author: 'caller',
      text: 'deliver me',
    });
    // The caller's side sees no tenant or user of the owner's.
    for (const secret of [grant.targetTenantId, owner.user.id, owner.user.username, agent.id]) {
      assert.equal(theirs.payload.includes(secret), false, secret);
    }
    assert.equal(own.payload, theirs.payload);
    // One deliver job per delivery, keyed by it.
    for (const delivery of [own, theirs]) {
      const jobs = await deliverJobs(delivery.id);
      assert.equal(jobs.length, 1);
      assert.equal(jobs[0]?.key, `callback_deliver:${delivery.id}`);
      assert.deepEqual(jobs[0]?.payload, { tenant_id: delivery.tenant_id, delivery_id: delivery.id });
    }
  });

  test('RLY-7: revoking the connection emits connection.revoked for each open thread, to both sides', async () => {
    const revocable = await relayAgent(ctx, owner);
    const other = await approvedConnection(ctx, owner, asker, revocable);
    const otherGrant = await resolveRelayToken(ctx.db.app, other.relayToken);
    assert.ok(otherGrant);
    const ownerSide = await register(owner, { agent_id: revocable.id, event_types: ['connection.revoked'] });
    const callerSide = await register(asker, {
      connection_id: other.connectionId,
      event_types: ['connection.revoked'],
    });
    const { thread } = await asTarget((tx) => startThread(tx, otherGrant, 'before the revoke'));
    const revoked = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/api/v1/connections/${other.connectionId}/revoke`,
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    assert.equal(revoked.statusCode, 200, revoked.body);
    const jobs = (await fanoutJobs(thread.id)).filter((job) => job.payload.type === 'connection.revoked');
    assert.equal(jobs.length, 1);
    await fanoutCallbackEvent(ctx.db.app, jobs[0]?.payload);
    for (const id of [ownerSide, callerSide]) {
      const [delivery, ...more] = await deliveriesOf(id);
      assert.equal(more.length, 0);
      assert.equal((JSON.parse(delivery?.payload ?? '{}') as CallbackPayload).data.state, 'revoked');
    }
  });

  test('RLY-7: revoking a connection with no open thread sends connection.revoked once to each side’s subscribed endpoints, as an event of the connection enqueued in the revoke’s transaction', async () => {
    const quiet = await relayAgent(ctx, owner);
    const unused = await approvedConnection(ctx, owner, asker, quiet);
    const ownerSide = await register(owner, { agent_id: quiet.id, event_types: ['connection.revoked'] });
    const callerSide = await register(asker, {
      connection_id: unused.connectionId,
      event_types: ['connection.revoked'],
    });
    const unsubscribed = await register(owner, { agent_id: quiet.id, event_types: ['thread.closed'] });
    const connectionJobs = () =>
      ctx.db.superuser<FanoutJob[]>`
        select j.payload, j.key from graphile_worker._private_jobs j
        join graphile_worker._private_tasks t on t.id = j.task_id
        where t.identifier = ${CALLBACK_FANOUT_TASK} and j.payload->>'connection_id' = ${unused.connectionId}`;
    // A revoke rolled back leaves no event behind (OPS-2).
    await assert.rejects(
      withTenant(ctx.db.app, owner.user.tenant_id, async (tx) => {
        await decideConnection(tx, owner.principal, unused.connectionId, 'revoke');
        throw new Error('roll back');
      }),
      /roll back/,
    );
    assert.equal((await connectionJobs()).length, 0);

    const revoked = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/api/v1/connections/${unused.connectionId}/revoke`,
      headers: { authorization: `Bearer ${owner.apiToken}` },
    });
    assert.equal(revoked.statusCode, 200, revoked.body);
    const [job, ...more] = await connectionJobs();
    assert.ok(job);
    assert.equal(more.length, 0);
    assert.equal(job.key, `${CALLBACK_FANOUT_TASK}:${String(job.payload.event_id)}`);
    assert.deepEqual(
      [job.payload.type, job.payload.tenant_id, job.payload.thread_id],
      ['connection.revoked', owner.user.tenant_id, undefined],
    );
    await fanoutCallbackEvent(ctx.db.app, job.payload);
    await fanoutCallbackEvent(ctx.db.app, job.payload);
    for (const id of [ownerSide, callerSide]) {
      const [delivery, ...others] = await deliveriesOf(id);
      assert.ok(delivery);
      assert.equal(others.length, 0);
      const body = JSON.parse(delivery.payload) as CallbackPayload;
      assert.equal(body.type, 'connection.revoked');
      assert.deepEqual(body.data, {
        connection_id: unused.connectionId,
        agent_handle: quiet.handle,
        state: 'revoked',
      });
      assert.equal((await deliverJobs(delivery.id)).length, 1);
    }
    const [theirs] = await deliveriesOf(callerSide);
    for (const secret of [owner.user.tenant_id, owner.user.id, quiet.id]) {
      assert.equal(theirs?.payload.includes(secret), false, secret);
    }
    assert.equal((await deliveriesOf(unsubscribed)).length, 0);
  });

  test('RLY-7: a fan-out payload that is not ours fails the job without touching any tenant', async () => {
    await assert.rejects(fanoutCallbackEvent(ctx.db.app, { tenant_id: 'x' }), /tenant_id/);
    await assert.rejects(
      fanoutCallbackEvent(ctx.db.app, {
        tenant_id: grant.targetTenantId,
        event_id: grant.connectionId,
        thread_id: grant.connectionId,
        type: 'thread.exploded',
        occurred_at: new Date().toISOString(),
      }),
      /type/,
    );
  });
});
