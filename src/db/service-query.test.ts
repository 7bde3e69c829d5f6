// Attack: system code (a job, a maintenance task) reads or writes tenant data without naming the tenant or leaving a record, so cross-tenant access happens unscoped and unseen.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { type ServiceQueryScope, serviceQuery, withTenant } from './tenant.ts';

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

/** service_queries rows with this reason, as seen by a tenant. */
async function recordsSeenBy(tenantId: string, reason: string): Promise<{ tenant_id: string }[]> {
  return withTenant(
    db.app,
    tenantId,
    (tx) => tx<{ tenant_id: string }[]>`select tenant_id from service_queries where reason = ${reason}`,
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

  test('TEN-5: each call records one service_queries row with its tenant and reason, in the same transaction as fn', async () => {
    const reason = `nightly retention ${randomUUID()}`;
    const inside = await serviceQuery(db.app, { tenantId: tenantA, reason }, async (tx) => {
      // Written before fn runs, by this very transaction.
      const [row] = await tx<{ count: number; same_tx: boolean }[]>`
        select count(*)::int as count,
               bool_and(xmin::text = (pg_current_xact_id()::text::bigint % 4294967296)::text) as same_tx
        from service_queries where reason = ${reason}`;
      return { ...row };
    });
    assert.deepEqual(inside, { count: 1, same_tx: true });
    assert.deepEqual(
      (await recordsSeenBy(tenantA, reason)).map((row) => row.tenant_id),
      [tenantA],
    );
  });

  test('TEN-5: the reason is recorded trimmed', async () => {
    const reason = `trimmed ${randomUUID()}`;
    await serviceQuery(db.app, { tenantId: tenantA, reason: `  ${reason}\n` }, async () => undefined);
    assert.equal((await recordsSeenBy(tenantA, reason)).length, 1);
  });

  test('TEN-5: when fn throws, neither its writes nor the record persist', async () => {
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

  test('TEN-5: the record is visible to its tenant only', async () => {
    const reason = `export for A ${randomUUID()}`;
    await serviceQuery(db.app, { tenantId: tenantA, reason }, async () => undefined);
    assert.equal((await recordsSeenBy(tenantA, reason)).length, 1);
    assert.equal((await recordsSeenBy(tenantB, reason)).length, 0);
    // And with no tenant bound, the app role sees no record at all.
    assert.equal((await db.app`select 1 from service_queries where reason = ${reason}`).length, 0);
  });
});
