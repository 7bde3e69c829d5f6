import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Sql } from 'postgres';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { migrate } from './migrator.ts';

// 0010_roles on a database that already has agents: each gets the creator the
// role table needs (members manage only their own agents), and the users
// table takes the admin role and nothing new besides.

let db: TestDatabase;
let owner: Sql;

before(async () => {
  db = await createTestDatabase({ empty: true });
  owner = db.connectAs(db.ownerCredentials, 2);
});
after(async () => {
  await db.drop();
});

test('ACC-12: 0010 backfills created_by from the provision record, else the tenant’s first owner, and allows admin', async () => {
  const rolesMigration = db.migrations.find((m) => m.name === 'roles');
  assert.ok(rolesMigration !== undefined, '0010_roles is among the migrations');
  await migrate(
    owner,
    db.target,
    db.ownerCredentials,
    db.migrations.filter((m) => m.version < rolesMigration.version),
  );
  const su = db.superuser;
  const [tenant] = await su<{ id: string }[]>`insert into tenants (name) values ('acme') returning id`;
  assert.ok(tenant !== undefined);
  const user = async (username: string, role: string) => {
    const [row] = await su<{ id: string }[]>`
      insert into users (tenant_id, username, email, password_hash, role)
      values (${tenant.id}::uuid, ${username}, ${`${username}@example.test`}, 'x', ${role}) returning id`;
    assert.ok(row !== undefined);
    return row.id;
  };
  const first = await user('first-owner', 'owner');
  const member = await user('a-member', 'member');
  const agent = async (handle: string) => {
    const [row] = await su<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      values (${tenant.id}::uuid, ${handle}, ${handle}, 'echo') returning id`;
    assert.ok(row !== undefined);
    return row.id;
  };
  const requested = await agent('requested-one');
  await su`
    insert into agent_provision_requests
      (tenant_id, agent_id, requested_by, template_id, support_access, credentials_provided)
    values (${tenant.id}::uuid, ${requested}::uuid, ${member}::uuid, 'echo', true, '{}'::jsonb)`;
  const unrecorded = await agent('unrecorded-one');

  await migrate(owner, db.target, db.ownerCredentials, db.migrations);
  const rows = await su<{ id: string; created_by: string | null }[]>`select id, created_by from agents`;
  const creator = (id: string) => rows.find((row) => row.id === id)?.created_by;
  assert.equal(creator(requested), member);
  assert.equal(creator(unrecorded), first);

  await su`update users set role = 'admin' where id = ${member}::uuid`;
  await assert.rejects(
    su`update users set role = 'superadmin' where id = ${member}::uuid`,
    /users_role_check/,
  );
});
