import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import canonicalize from 'canonicalize';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { withTenant } from '../db/tenant.ts';
import { appendAuditEvent, appendPlatformAuditEvent, PLATFORM_TENANT } from './append.ts';

// AUD-2: what appendAuditEvent stores, recomputed here from first principles
// (node:crypto and the `canonicalize` package, not the code under test).

let db: TestDatabase;
const tenant = randomUUID();

interface Row {
  tenant_id: string;
  seq: string;
  ts: string;
  actor: string;
  action: string;
  target: string | null;
  data: Record<string, unknown>;
  prev_hash: Buffer;
  hash: Buffer;
  canonical: string;
}

async function storedEvents(tenantId: string): Promise<Row[]> {
  return withTenant(
    db.app,
    tenantId,
    (tx) =>
      tx<Row[]>`
      select tenant_id, seq, to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ts,
             actor, action, target, data, prev_hash, hash, canonical
      from audit_events order by seq`,
  );
}

before(async () => {
  db = await createTestDatabase();
  await withTenant(db.app, tenant, (tx) => tx`insert into tenants (id, name) values (${tenant}, 'chain')`);
  const events = [
    { actor: 'system', action: 'test.first', target: null, data: {} },
    // Keys out of order, non-ASCII text and numbers JCS writes in its own way: the canonical form matters here.
    {
      actor: `user:${randomUUID()}`,
      action: 'test.second',
      target: 'thing:café ✓',
      data: { zeta: 1e21, alpha: 'naïve — “quoted”', mid: [3, 1.5, -0], nested: { b: true, a: null } },
    },
    { actor: 'anonymous', action: 'test.third', target: null, data: { emoji: '🔐', count: 3 } },
  ];
  for (const event of events) await withTenant(db.app, tenant, (tx) => appendAuditEvent(tx, tenant, event));
});
after(() => db.drop());

describe('the chain', () => {
  test('AUD-2: each stored hash is SHA-256(prev_hash ‖ UTF-8 canonical), the first prev_hash is 32 zero bytes, and each prev_hash is the hash before it', async () => {
    const rows = await storedEvents(tenant);
    assert.deepEqual(
      rows.map((row) => Number(row.seq)),
      [1, 2, 3],
    );
    assert.deepEqual(rows[0]?.prev_hash, Buffer.alloc(32));
    let prev = Buffer.alloc(32);
    for (const row of rows) {
      assert.deepEqual(row.prev_hash, prev, `prev_hash of seq ${row.seq}`);
      const expected = createHash('sha256')
        .update(Buffer.concat([prev, Buffer.from(row.canonical, 'utf8')]))
        .digest();
      assert.deepEqual(row.hash, expected, `hash of seq ${row.seq}`);
      prev = row.hash;
    }
    const [head] = await withTenant(
      db.app,
      tenant,
      (tx) => tx<{ seq: string; hash: Buffer }[]>`select seq, hash from audit_heads`,
    );
    assert.equal(head?.seq, '3');
    assert.deepEqual(head?.hash, prev);
  });

  test('AUD-2: the canonical text is the RFC 8785 JCS of {v, tenant, seq, ts, actor, action, target, data}, built from the stored columns', async () => {
    const rows = await storedEvents(tenant);
    for (const row of rows) {
      const expected = canonicalize({
        v: 1,
        tenant: row.tenant_id,
        seq: Number(row.seq),
        ts: row.ts,
        actor: row.actor,
        action: row.action,
        target: row.target,
        data: row.data,
      });
      assert.equal(row.canonical, expected, `canonical text of seq ${row.seq}`);
    }
    // The text is JCS, not JSON.stringify: keys sorted, numbers in ECMAScript form.
    assert.match(
      rows[1]?.canonical ?? '',
      /"data":\{"alpha":"naïve — “quoted”","mid":\[3,1\.5,0\],"nested":\{"a":null,"b":true\},"zeta":1e\+21\}/,
    );
    assert.ok(rows.every((row) => row.canonical.startsWith('{"action":')));
  });

  test('AUD-2: appendPlatformAuditEvent writes to the platform chain from a transaction bound to a tenant, and binds that tenant again', async () => {
    const marker = randomUUID();
    const bound = await withTenant(db.app, tenant, async (tx) => {
      await appendPlatformAuditEvent(tx, {
        actor: 'system',
        action: 'test.platform',
        target: null,
        data: { marker },
      });
      const [row] = await tx<{ tenant: string }[]>`select current_setting('app.tenant_id') as tenant`;
      return row?.tenant;
    });
    assert.equal(bound, tenant);
    const platform = await storedEvents(PLATFORM_TENANT);
    assert.deepEqual(
      platform.filter((row) => row.data.marker === marker).map((row) => row.action),
      ['test.platform'],
    );
    assert.equal((await storedEvents(tenant)).filter((row) => row.data.marker === marker).length, 0);
  });
});
