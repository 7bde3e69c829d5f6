// Attack: system code (a job, a maintenance task) reads or writes tenant data without naming the tenant or leaving a record, so cross-tenant access happens unscoped and unseen.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { SERVICE_QUERY_ACTION, type ServiceQueryScope, serviceQuery, withTenant } from './tenant.ts';

let db: TestDatabase;
const tenantA = randomUUID();
const tenantB = randomUUID();

before(async () => {
  db = await createTestDatabase();
  for (const [id, name] of [
    [tenantA, 'A'],
    [tenantB, 'B'],
  ] as const) {
    await withTenant(db.app, id, (tx) => tx`insert into tenants (id, name) values (${id}, ${name})`);
  }
});
after(() => db.drop());

interface ServiceQueryEvent {
  tenant_id: string;
  actor: string;
  action: string;
  target: string | null;
  data: unknown;
  xmin: string;
}

/** `system.service_query` audit events with this reason, as seen by a tenant. */
async function recordsSeenBy(tenantId: string, reason: string): Promise<ServiceQueryEvent[]> {
  return withTenant(
    db.app,
    tenantId,
    (tx) => tx<ServiceQueryEvent[]>`
      select tenant_id, actor, action, target, data, xmin::text as xmin from audit_events
      where action = ${SERVICE_QUERY_ACTION} and data ->> 'reason' = ${reason}`,
  );
}

function isUnscoped(error: Error & { code?: string }): boolean {
  assert.equal(error.code, 'service_query_unscoped', error.message);
  return true;
}

describe('serviceQuery', () => {
  test("TEN-5: fn runs scoped to the named tenant and sees only that tenant's rows", async () => {
    const reason = `scope check ${randomUUID()}`;
    const ids = await serviceQuery(db.app, { tenantId: tenantA, reason }, async (tx) => {
      const rows = await tx<{ id: string }[]>`select id from tenants`;
      return rows.map((row) => row.id);
    });
    assert.deepEqual(ids, [tenantA]);
    // B exists: the scope, not an empty table, hid it.
    assert.equal((await withTenant(db.app, tenantB, (tx) => tx`select id from tenants`)).length, 1);
  });

  test("TEN-5: each call appends one system.service_query audit event (actor system, its reason) to the tenant's chain, in the same transaction as fn", async () => {
    const reason = `nightly retention ${randomUUID()}`;
    const fnXid = await serviceQuery(db.app, { tenantId: tenantA, reason }, async (tx) => {
      // The 32-bit transaction id fn ran in, which becomes the xmin of every row this transaction writes.
      const [row] = await tx<{ xid: string }[]>`
        select (pg_current_xact_id()::text::bigint % 4294967296)::text as xid`;
      return row?.xid;
    });
    const events = await recordsSeenBy(tenantA, reason);
    assert.deepEqual(
      events.map(({ xmin: _xmin, ...event }) => event),
      [
        {
          tenant_id: tenantA,
          actor: 'system',
          action: 'system.service_query',
          target: null,
          data: { reason },
        },
      ],
    );
    assert.equal(events[0]?.xmin, fnXid, 'the event was written by the transaction fn ran in');
  });

  test('TEN-5: the reason is recorded trimmed', async () => {
    const reason = `trimmed ${randomUUID()}`;
    await serviceQuery(db.app, { tenantId: tenantA, reason: `  ${reason}\n` }, async () => undefined);
    assert.equal((await recordsSeenBy(tenantA, reason)).length, 1);
  });

  test('TEN-5: when fn throws, neither its writes nor the audit event persist', async () => {
    const reason = `doomed ${randomUUID()}`;
    await assert.rejects(
      serviceQuery(db.app, { tenantId: tenantA, reason }, async (tx) => {
        await tx`update tenants set name = 'rewritten' where id = ${tenantA}`;
        throw new Error('task failed');
      }),
      /task failed/,
    );
    assert.equal((await recordsSeenBy(tenantA, reason)).length, 0);
    const [row] = await withTenant(db.app, tenantA, (tx) => tx<{ name: string }[]>`select name from tenants`);
    assert.equal(row?.name, 'A');
    // The chain has no gap where the rolled-back event would have been.
    const seqs = await withTenant(
      db.app,
      tenantA,
      (tx) => tx<{ seq: string }[]>`select seq from audit_events order by seq`,
    );
    assert.deepEqual(
      seqs.map((r) => Number(r.seq)),
      seqs.map((_, i) => i + 1),
    );
  });

  test('TEN-5: refuses a missing or invalid tenant id before fn runs', async () => {
    const bad: unknown[] = [undefined, null, '', 'not-a-uuid', `${tenantA}' or '1'='1`, ` ${tenantA}`, 42];
    for (const tenantId of bad) {
      let ran = false;
      const scope = { tenantId, reason: 'maintenance' } as unknown as ServiceQueryScope;
      await assert.rejects(
        serviceQuery(db.app, scope, async () => {
          ran = true;
        }),
        isUnscoped,
      );
      assert.equal(ran, false, `fn ran with tenant id ${String(tenantId)}`);
    }
  });

  test('TEN-5: refuses a missing, empty, whitespace or over-200-character reason before fn runs', async () => {
    const bad: unknown[] = [undefined, null, '', '   ', '\n\t', 'x'.repeat(201), ` ${'y'.repeat(201)} `];
    for (const reason of bad) {
      let ran = false;
      const scope = { tenantId: tenantA, reason } as unknown as ServiceQueryScope;
      await assert.rejects(
        serviceQuery(db.app, scope, async () => {
          ran = true;
        }),
        isUnscoped,
      );
      assert.equal(ran, false, `fn ran with reason ${JSON.stringify(reason)}`);
    }
    // The boundary itself is accepted, so the refusal above is about length.
    const longest = `${randomUUID()}${'z'.repeat(164)}`;
    assert.equal(longest.length, 200);
    await serviceQuery(db.app, { tenantId: tenantA, reason: longest }, async () => undefined);
    assert.equal((await recordsSeenBy(tenantA, longest)).length, 1);
  });

  test('TEN-5: the audit event is visible to its tenant only', async () => {
    const reason = `export for A ${randomUUID()}`;
    await serviceQuery(db.app, { tenantId: tenantA, reason }, async () => undefined);
    assert.equal((await recordsSeenBy(tenantA, reason)).length, 1);
    assert.equal((await recordsSeenBy(tenantB, reason)).length, 0);
    // And with no tenant bound, the app role sees no event at all.
    assert.equal((await db.app`select 1 from audit_events where data ->> 'reason' = ${reason}`).length, 0);
  });
});
