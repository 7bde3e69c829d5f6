// RLY-9: the hourly relay_retention job, run through the real task handler with its clock set past 30
// days: payloads go 30 days after creation, each tenant's by its own ages, in batches, recorded as
// serviceQuery on the tenant's chain; metadata stays; expired thread tokens and idempotency keys go.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { insertAgent } from '../../test/helpers/agents.ts';
import { useTestApp } from '../../test/helpers/app.ts';
import { callbackDeliveryRow, callbackEndpoint } from '../../test/helpers/callbacks.ts';
import { approvedConnection, relayAgent } from '../../test/helpers/relay.ts';
import { parseCanonicalEvent } from '../audit/event.ts';
import { createAuditServices } from '../audit/setup.ts';
import { replayDelivery } from '../callbacks/deliver.ts';
import { SERVICE_QUERY_ACTION, withTenant } from '../db/tenant.ts';
import { createTaskHandlers } from '../jobs/tasks.ts';
import { hashToken } from '../tokens.ts';
import { type RelayGrant, resolveRelayToken } from './connections.ts';
import { RELAY_RETENTION_REASON, runRelayRetention } from './retention.ts';
import {
  listMessages,
  mintThreadToken,
  postCallerMessage,
  resolveThreadToken,
  startThread,
} from './threads.ts';

const ctx = useTestApp();
const DAY_MS = 24 * 60 * 60 * 1000;
let owner: TestAccount;
let otherOwner: TestAccount;
let asker: TestAccount;
/** The asker's grants to an agent of owner's tenant and to one of otherOwner's. */
let grant: RelayGrant;
let otherGrant: RelayGrant;
/** The time the job believes it is. */
let clock = new Date();

async function grantTo(target: TestAccount): Promise<RelayGrant> {
  const agent = await relayAgent(ctx, target);
  const connection = await approvedConnection(ctx, target, asker, agent);
  const resolved = await resolveRelayToken(ctx.db.app, connection.relayToken);
  assert.ok(resolved);
  return resolved;
}

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp);
  otherOwner = await createAccount(ctx.db, ctx.testApp);
  asker = await createAccount(ctx.db, ctx.testApp);
  grant = await grantTo(owner);
  otherGrant = await grantTo(otherOwner);
});

/** The cron job's handler, as the worker builds it, with the test's clock. */
async function runJob(): Promise<void> {
  const handler = createTaskHandlers({
    sql: ctx.db.app,
    workerId: 'relay retention test',
    startedAt: new Date(),
    mailer: { send: async () => {} },
    publicUrl: 'http://127.0.0.1',
    audit: createAuditServices(ctx.testApp.audit, ctx.db.app, { info: () => {}, error: () => {} }),
    lifecycle: undefined,
    clock: () => clock,
  }).relay_retention;
  assert.ok(handler, 'relay_retention is a task of every worker');
  await handler({});
}

/** A thread in the grant's target tenant: the caller's first message, then follow-ups; their ids in order. */
async function thread(on: RelayGrant, texts: string[]): Promise<{ threadId: string; messageIds: string[] }> {
  return withTenant(ctx.db.app, on.targetTenantId, async (tx) => {
    const [first, ...rest] = texts;
    const started = await startThread(tx, on, first ?? 'hello');
    const messageIds = [started.message.id];
    for (const text of rest) messageIds.push((await postCallerMessage(tx, on, started.thread.id, text)).id);
    return { threadId: started.thread.id, messageIds };
  });
}

/** Moves messages' creation back, as if written `days` earlier. */
async function backdate(messageIds: string[], days: number): Promise<void> {
  await ctx.db.superuser`
    update relay_messages set created_at = created_at - make_interval(days => ${days})
    where id = any(${messageIds}::uuid[])`;
}

const messageRows = (threadId: string) =>
  ctx.db.superuser<Record<string, unknown>[]>`
    select * from relay_messages where thread_id = ${threadId}::uuid order by seq`;
const threadRow = (threadId: string) =>
  ctx.db.superuser<Record<string, unknown>[]>`select * from relay_threads where id = ${threadId}::uuid`;

/** The reasons of the tenant's serviceQuery audit events, oldest first. */
async function serviceQueryReasons(tenantId: string): Promise<unknown[]> {
  const rows = await ctx.db.superuser<{ canonical: string }[]>`
    select canonical from audit_events where tenant_id = ${tenantId}::uuid order by seq`;
  return rows
    .map((row) => parseCanonicalEvent(row.canonical))
    .filter((event) => event.action === SERVICE_QUERY_ACTION)
    .map((event) => event.data.reason);
}

const payloadOf = (rows: Record<string, unknown>[], id: string) => {
  const row = rows.find((candidate) => candidate.id === id);
  assert.ok(row, `message ${id} is still there`);
  return { body: row.body, deleted: row.payload_deleted_at instanceof Date };
};

describe('relay retention', () => {
  let first: { threadId: string; messageIds: string[] };

  test('RLY-9: with a clock set past 30 days, a 31-day-old payload is gone and its metadata stays; a 29-day-old one stays', async () => {
    first = await thread(grant, ['the old secret', 'a recent question']);
    const [oldId = '', recentId = ''] = first.messageIds;
    await backdate([oldId], 2);
    clock = new Date(Date.now() + 29 * DAY_MS);
    const threadBefore = await threadRow(first.threadId);
    const messagesBefore = await messageRows(first.threadId);

    await runJob();

    const messagesAfter = await messageRows(first.threadId);
    assert.deepEqual(payloadOf(messagesAfter, oldId), { body: null, deleted: true });
    assert.deepEqual(payloadOf(messagesAfter, recentId), { body: 'a recent question', deleted: false });
    // Everything but the payload is as it was: ids, author, seq, sizes, delivery, timestamps.
    const withoutPayload = (rows: Record<string, unknown>[]) =>
      rows.map(({ body: _body, payload_deleted_at: _deleted, ...metadata }) => metadata);
    assert.deepEqual(withoutPayload(messagesAfter), withoutPayload(messagesBefore));
    assert.equal(messagesAfter[0]?.body_bytes, Buffer.byteLength('the old secret'));
    assert.deepEqual(
      await threadRow(first.threadId),
      threadBefore,
      'the thread row (state, sizes, times) stays',
    );
  });

  test('RLY-9: a reader of the thread tells an expired payload (body null, payload_deleted_at set) from a live one', async () => {
    const page = await withTenant(ctx.db.app, grant.targetTenantId, (tx) =>
      listMessages(tx, first.threadId, { afterSeq: 0, limit: 10 }),
    );
    assert.deepEqual(
      page.map((message) => [message.seq, message.body, message.payload_deleted_at instanceof Date]),
      [
        [1, null, true],
        [2, 'a recent question', false],
      ],
    );
  });

  test('RLY-9: the sweep is a serviceQuery on the tenant chain naming its reason; a tenant with nothing due is not touched', async () => {
    assert.deepEqual(await serviceQueryReasons(grant.targetTenantId), [RELAY_RETENTION_REASON]);
    assert.deepEqual(await serviceQueryReasons(otherGrant.targetTenantId), []);
    assert.deepEqual(await serviceQueryReasons(asker.user.tenant_id), []);
  });

  test('RLY-9: a second run changes nothing and records nothing', async () => {
    const messagesBefore = await messageRows(first.threadId);
    const [eventsBefore] = await ctx.db.superuser<
      { n: number }[]
    >`select count(*)::int as n from audit_events`;
    await runJob();
    assert.deepEqual(await messageRows(first.threadId), messagesBefore);
    const [eventsAfter] = await ctx.db.superuser<
      { n: number }[]
    >`select count(*)::int as n from audit_events`;
    assert.deepEqual(eventsAfter, eventsBefore);
  });

  test("RLY-9: each tenant's payloads follow their own ages", async () => {
    const other = await thread(otherGrant, ['old in the other tenant', 'new in the other tenant']);
    const [otherOld = '', otherNew = ''] = other.messageIds;
    await backdate([otherOld], 2);
    await runJob();
    const otherRows = await messageRows(other.threadId);
    assert.deepEqual(payloadOf(otherRows, otherOld), { body: null, deleted: true });
    assert.deepEqual(payloadOf(otherRows, otherNew), { body: 'new in the other tenant', deleted: false });
    const [, recentId = ''] = first.messageIds;
    assert.deepEqual(payloadOf(await messageRows(first.threadId), recentId), {
      body: 'a recent question',
      deleted: false,
    });
    assert.deepEqual(await serviceQueryReasons(otherGrant.targetTenantId), [RELAY_RETENTION_REASON]);
    assert.deepEqual(
      await serviceQueryReasons(grant.targetTenantId),
      [RELAY_RETENTION_REASON],
      'the first tenant had nothing due this time',
    );
  });

  test('RLY-9: a backlog larger than a batch is deleted in several transactions, none skipped', async () => {
    const backlog = await thread(otherGrant, ['a', 'b', 'c', 'd', 'e']);
    await backdate(backlog.messageIds, 2);
    const eventsBefore = (await serviceQueryReasons(otherGrant.targetTenantId)).length;
    const result = await runRelayRetention(ctx.db.app, { now: clock, batch: 2 });
    assert.equal(result.payloadsDeleted, 5);
    assert.deepEqual(result.failures, []);
    const rows = await messageRows(backlog.threadId);
    assert.deepEqual(
      rows.map((row) => row.body),
      [null, null, null, null, null],
    );
    assert.equal(
      (await serviceQueryReasons(otherGrant.targetTenantId)).length - eventsBefore,
      3,
      'batches of 2, 2 and 1, each its own recorded transaction',
    );
  });
  test("RLY-9: a tenant whose sweep fails fails the job, after the other tenants' payloads are deleted; the next run finishes it", async () => {
    const stuck = await thread(grant, ['stuck payload']);
    const other = await thread(otherGrant, ['deleted regardless']);
    await backdate([...stuck.messageIds, ...other.messageIds], 2);
    // The database refuses the first tenant's updates, as a lock timeout or a bug would.
    await ctx.db.superuser.unsafe(`
      create function retention_test_refuse() returns trigger language plpgsql as $$
      begin raise exception 'refused for the test'; end $$;
      create trigger refuse_retention before update on relay_messages
        for each row when (old.tenant_id = '${grant.targetTenantId}') execute function retention_test_refuse();`);
    try {
      await assert.rejects(runJob(), (error: Error & { code?: string }) => {
        assert.equal(error.code, 'relay_retention_incomplete');
        assert.match(error.message, new RegExp(grant.targetTenantId));
        return true;
      });
      assert.deepEqual(payloadOf(await messageRows(other.threadId), other.messageIds[0] ?? ''), {
        body: null,
        deleted: true,
      });
      assert.equal((await messageRows(stuck.threadId))[0]?.body, 'stuck payload');
    } finally {
      await ctx.db.superuser.unsafe(`
        drop trigger refuse_retention on relay_messages; drop function retention_test_refuse();`);
    }
    await runJob();
    assert.deepEqual(payloadOf(await messageRows(stuck.threadId), stuck.messageIds[0] ?? ''), {
      body: null,
      deleted: true,
    });
  });
});

describe('relay retention of thread tokens and idempotency keys', () => {
  test('RLY-9, RLY-4: expired thread tokens are deleted; a live one stays and still opens its thread', async () => {
    clock = new Date();
    const { threadId } = await thread(grant, ['a thread to read']);
    const mint = () =>
      withTenant(ctx.db.app, owner.user.tenant_id, (tx) => mintThreadToken(tx, owner.principal, threadId));
    const expired = await mint();
    const live = await mint();
    await ctx.db.superuser`
      update relay_thread_tokens
      set created_at = created_at - interval '2 hours', expires_at = expires_at - interval '2 hours'
      where token_hash = ${hashToken(expired.token).toString('hex')}`;
    await runJob();
    const left = await ctx.db.superuser<{ token_hash: string }[]>`
      select token_hash from relay_thread_tokens where thread_id = ${threadId}::uuid`;
    assert.deepEqual(
      left.map((row) => row.token_hash),
      [hashToken(live.token).toString('hex')],
    );
    assert.equal((await resolveThreadToken(ctx.db.app, live.token))?.threadId, threadId);
  });

  test('RLY-9, RLY-6: idempotency keys past their 24 hours are deleted; live ones stay', async () => {
    const tenantId = grant.targetTenantId;
    const insertKey = (key: string, expiresIn: string) => ctx.db.superuser`
      insert into idempotency_keys (tenant_id, scope, key, fingerprint, claim, state, status, response_body, expires_at)
      values (${tenantId}::uuid, 'relay_token:retention-test', ${key}, ${randomBytes(32)}, ${randomUUID()}::uuid,
              'done', 201, '{}'::json, now() + ${expiresIn}::interval)`;
    await insertKey('expired', '-1 second');
    await insertKey('live', '23 hours');
    const reasonsBefore = (await serviceQueryReasons(tenantId)).length;
    await runJob();
    const left = await ctx.db.superuser<{ key: string }[]>`
      select key from idempotency_keys where scope = 'relay_token:retention-test' order by key`;
    assert.deepEqual(
      left.map((row) => row.key),
      ['live'],
    );
    assert.deepEqual((await serviceQueryReasons(tenantId)).slice(reasonsBefore), [RELAY_RETENTION_REASON]);
  });
});

describe('relay retention of callback payloads and inbound webhook bodies', () => {
  let hooks: TestAccount;
  const deliveryRow = (id: string) =>
    ctx.db.superuser<Record<string, unknown>[]>`select * from callback_deliveries where id = ${id}::uuid`;
  const attemptRows = (id: string) =>
    ctx.db.superuser<Record<string, unknown>[]>`
      select * from callback_attempts where delivery_id = ${id}::uuid order by number`;
  const eventRow = (id: string) =>
    ctx.db.superuser<Record<string, unknown>[]>`select * from inbound_webhook_events where id = ${id}::uuid`;
  /** Everything but what retention removes and the columns it sets when it does. */
  const metadata = (rows: Record<string, unknown>[]) =>
    rows.map(
      ({
        payload: _p,
        payload_bytes: _pb,
        payload_deleted_at: _pd,
        response_prefix: _r,
        body: _b,
        body_bytes: _bb,
        delivery: _d,
        ...kept
      }) => kept,
    );

  test('RLY-9: a finished callback delivery 31 days old loses its payload and its answers’ excerpts, keeps ids, times, statuses and size; a pending one and a 29-day-old one keep theirs', async () => {
    clock = new Date();
    hooks = await createAccount(ctx.db, ctx.testApp);
    const tenantId = hooks.user.tenant_id;
    const agentId = await insertAgent(ctx.db.app, tenantId, 'retained');
    const endpoint = await callbackEndpoint(ctx.db, 'https://hooks.example/retention', { tenantId, agentId });
    const old = await callbackDeliveryRow(ctx.db, endpoint);
    const pending = await callbackDeliveryRow(ctx.db, endpoint);
    const recent = await callbackDeliveryRow(ctx.db, endpoint);
    await withTenant(ctx.db.app, tenantId, async (tx) => {
      for (const { id } of [old, recent]) {
        await tx`
          insert into callback_attempts (tenant_id, delivery_id, number, status, latency_ms, response_prefix)
          values (${tenantId}, ${id}, 1, 200, 30, 'echo: hello')`;
        await tx`
          update callback_deliveries set state = 'succeeded', attempts = 1, last_status = 200, finished_at = now()
          where id = ${id}`;
      }
    });
    await ctx.db.superuser`
      update callback_deliveries set created_at = created_at - make_interval(days => 31)
      where id = any(${[old.id, pending.id]}::uuid[])`;
    await ctx.db.superuser`
      update callback_deliveries set created_at = created_at - make_interval(days => 29) where id = ${recent.id}::uuid`;
    const before = { delivery: await deliveryRow(old.id), attempts: await attemptRows(old.id) };

    await runJob();

    const [expired] = await deliveryRow(old.id);
    assert.equal(expired?.payload, null);
    assert.ok(expired?.payload_deleted_at instanceof Date);
    assert.equal(expired?.payload_bytes, Buffer.byteLength(old.payload));
    assert.deepEqual(metadata(await deliveryRow(old.id)), metadata(before.delivery));
    const attempts = await attemptRows(old.id);
    assert.deepEqual(
      attempts.map((a) => a.response_prefix),
      [null],
    );
    assert.deepEqual(
      metadata(attempts),
      metadata(before.attempts),
      'the attempt (time, status, latency) stays',
    );
    // The explicit rule: a delivery whose series still runs keeps what it sends.
    assert.equal((await deliveryRow(pending.id))[0]?.payload, pending.payload);
    assert.equal((await deliveryRow(recent.id))[0]?.payload, recent.payload);
    assert.deepEqual(
      (await attemptRows(recent.id)).map((a) => a.response_prefix),
      ['echo: hello'],
    );
    assert.equal(
      await withTenant(ctx.db.app, tenantId, (tx) => replayDelivery(tx, tenantId, old.id)),
      false,
      'an expired delivery is never sent again: there is nothing to send',
    );
    assert.deepEqual(await serviceQueryReasons(tenantId), [RELAY_RETENTION_REASON]);

    // Its series over, the pending delivery's payload goes at the next run.
    await ctx.db.superuser`
      update callback_deliveries set state = 'failed', attempts = 7, finished_at = now() where id = ${pending.id}::uuid`;
    await runJob();
    assert.equal((await deliveryRow(pending.id))[0]?.payload, null);
    assert.equal((await deliveryRow(recent.id))[0]?.payload, recent.payload);
  });

  test('RLY-9: an inbound webhook event 31 days old loses its body and keeps its metadata; one still queued is failed (nothing left to deliver); a 29-day-old one stays', async () => {
    const tenantId = hooks.user.tenant_id;
    const agentId = await insertAgent(ctx.db.app, tenantId, 'inbound');
    const [endpoint] = await ctx.db.superuser<{ id: string }[]>`
      insert into inbound_webhooks (tenant_id, agent_id, description, secret_salt)
      values (${tenantId}::uuid, ${agentId}::uuid, 'retention', ${randomBytes(16)}) returning id`;
    const event = async (webhookId: string, delivery: string, days: number) => {
      const [row] = await ctx.db.superuser<{ id: string }[]>`
        insert into inbound_webhook_events (tenant_id, endpoint_id, webhook_id, body, delivery, received_at, delivered_at)
        values (${tenantId}::uuid, ${endpoint?.id ?? ''}::uuid, ${webhookId}, ${`{"secret":"${webhookId}"}`},
          ${delivery}, now() - make_interval(days => ${days}),
          case when ${delivery} = 'delivered' then now() - make_interval(days => ${days}) end)
        returning id`;
      return row?.id ?? '';
    };
    const delivered = await event('old-delivered', 'delivered', 31);
    const queued = await event('old-queued', 'queued', 31);
    const recent = await event('recent', 'delivered', 29);
    const before = await eventRow(delivered);

    await runJob();

    const [gone] = await eventRow(delivered);
    assert.deepEqual(
      [gone?.body, gone?.body_bytes, gone?.payload_deleted_at instanceof Date, gone?.delivery],
      [null, Buffer.byteLength('{"secret":"old-delivered"}'), true, 'delivered'],
    );
    assert.deepEqual(metadata(await eventRow(delivered)), metadata(before));
    const [parked] = await eventRow(queued);
    assert.deepEqual([parked?.body, parked?.delivery], [null, 'failed']);
    assert.equal((await eventRow(recent))[0]?.body, '{"secret":"recent"}');
  });

  test('RLY-9: a callback backlog larger than a batch is cleared in several transactions, none skipped', async () => {
    const tenantId = hooks.user.tenant_id;
    const agentId = await insertAgent(ctx.db.app, tenantId, 'backlog');
    const endpoint = await callbackEndpoint(ctx.db, 'https://hooks.example/backlog', { tenantId, agentId });
    const ids: string[] = [];
    for (let i = 0; i < 5; i += 1) ids.push((await callbackDeliveryRow(ctx.db, endpoint)).id);
    await ctx.db.superuser`
      update callback_deliveries
      set state = 'succeeded', finished_at = now(), created_at = created_at - make_interval(days => 31)
      where id = any(${ids}::uuid[])`;
    const eventsBefore = (await serviceQueryReasons(tenantId)).length;
    const result = await runRelayRetention(ctx.db.app, { now: clock, batch: 2 });
    assert.equal(result.callbackPayloadsDeleted, 5);
    const left = await ctx.db.superuser<{ n: number }[]>`
      select count(*)::int as n from callback_deliveries where id = any(${ids}::uuid[]) and payload is not null`;
    assert.equal(left[0]?.n, 0);
    assert.equal((await serviceQueryReasons(tenantId)).length - eventsBefore, 3, 'batches of 2, 2 and 1');
  });
});
