import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { appendAuditEvent } from '../audit/append.ts';
import { withTenant } from './tenant.ts';

// Attack: code running as the app role reads or writes another tenant's rows,
// by naming the other tenant's ids or by forgetting to bind a tenant at all.

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

describe('withTenant', () => {
  test('TEN-3: the transaction binds app.tenant_id before any query, and the binding ends with it', async () => {
    const seen = await withTenant(db.app, tenantA, async (tx) => {
      const [row] = await tx<{ tenant: string }[]>`select current_setting('app.tenant_id') as tenant`;
      return row?.tenant;
    });
    assert.equal(seen, tenantA);
    // The same pooled connections, outside any tenant transaction: nothing is bound.
    const rows = await db.app<
      { tenant: string | null }[]
    >`select current_setting('app.tenant_id', true) as tenant`;
    assert.ok(rows[0]?.tenant === null || rows[0]?.tenant === '');
  });

  test('TEN-1: a tenant reads only its own rows', async () => {
    const rows = await withTenant(db.app, tenantB, (tx) => tx<{ id: string }[]>`select id from tenants`);
    assert.deepEqual(
      rows.map((r) => r.id),
      [tenantB],
    );
    const byId = await withTenant(db.app, tenantB, (tx) => tx`select id from tenants where id = ${tenantA}`);
    assert.equal(byId.length, 0);
  });

  test("TEN-1: a tenant cannot write another tenant's rows", async () => {
    const updated = await withTenant(
      db.app,
      tenantB,
      (tx) => tx`update tenants set name = 'stolen' where id = ${tenantA}`,
    );
    assert.equal(updated.count, 0);
    const deleted = await withTenant(db.app, tenantB, (tx) => tx`delete from tenants where id = ${tenantA}`);
    assert.equal(deleted.count, 0);
    await assert.rejects(
      withTenant(
        db.app,
        tenantB,
        (tx) => tx`insert into tenants (id, name) values (${randomUUID()}, 'planted')`,
      ),
      /row-level security/,
    );
    await assert.rejects(
      withTenant(
        db.app,
        tenantB,
        (tx) => tx`
          insert into users (tenant_id, username, email, password_hash, role)
          values (${tenantA}, 'planted_user', 'planted@example.test', 'x', 'member')`,
      ),
      /row-level security/,
    );
    const [a] = await withTenant(db.app, tenantA, (tx) => tx<{ name: string }[]>`select name from tenants`);
    assert.equal(a?.name, 'A');
  });

  test('TEN-1: with no tenant bound, tenant tables return no rows and accept no writes (fail closed)', async () => {
    assert.equal((await db.app`select * from tenants`).length, 0);
    // Tenant A has audit events (its own chain, appended below): unbound, none is visible.
    await withTenant(db.app, tenantA, (tx) =>
      appendAuditEvent(tx, tenantA, { actor: 'system', action: 'test.fail_closed', target: null, data: {} }),
    );
    assert.equal((await db.app`select * from audit_events`).length, 0);
    assert.equal((await db.app`select * from audit_heads`).length, 0);
    await assert.rejects(db.app`insert into tenants (name) values ('orphan')`, /row-level security/);
    await assert.rejects(
      db.app`
        insert into users (tenant_id, username, email, password_hash, role)
        values (${tenantA}, 'orphan_user', 'orphan@example.test', 'x', 'member')`,
      /row-level security/,
    );
  });

  test('TEN-3: withTenant refuses anything but a uuid', async () => {
    for (const bad of ['', 'not-a-uuid', `${tenantA}' or '1'='1`]) {
      await assert.rejects(
        withTenant(db.app, bad, async () => 'ran'),
        (error: Error & { code?: string }) => error.code === 'tenant_id_invalid',
      );
    }
  });

  test('TEN-3: a failed transaction rolls back everything it wrote', async () => {
    const id = randomUUID();
    await assert.rejects(
      withTenant(db.app, id, async (tx) => {
        await tx`insert into tenants (id, name) values (${id}, 'temp')`;
        throw new Error('boom');
      }),
      /boom/,
    );
    const rows = await withTenant(db.app, id, (tx) => tx`select id from tenants`);
    assert.equal(rows.length, 0);
  });
});
