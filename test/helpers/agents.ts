import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { withTenant } from '../../src/db/tenant.ts';

/** An agent row of the echo template for `tenantId`, with a random handle; its id. */
export async function insertAgent(sql: Sql, tenantId: string, prefix: string): Promise<string> {
  const handle = `${prefix}-${randomBytes(6).toString('hex')}`;
  const [row] = await withTenant(
    sql,
    tenantId,
    (tx) => tx<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      values (${tenantId}::uuid, ${handle}, ${`${prefix} test`}, 'echo') returning id`,
  );
  assert.ok(row !== undefined);
  return row.id;
}
