// Attack: code running as the app role (a compromised server process, an SQL injection) edits, deletes or forges audit events — writing the tables directly, or feeding the append function a crafted event — or races appends until a tenant's chain forks.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { appendAuditEvent } from './append.ts';
import { canonicalEvent, eventHash, GENESIS_HASH } from './event.ts';
import { canonicalJson } from './jcs.ts';

let db: TestDatabase;
const tenantA = randomUUID();
const tenantB = randomUUID();

async function createTenant(id: string): Promise<void> {
  await withTenant(db.app, id, (tx) => tx`insert into tenants (id, name) values (${id}, ${`tenant ${id}`})`);
}

before(async () => {
  db = await createTestDatabase();
  await Promise.all([createTenant(tenantA), createTenant(tenantB)]);
  // Rows to attack: tenant A's chain has three events.
  for (let n = 1; n <= 3; n += 1) {
    await withTenant(db.app, tenantA, (tx) =>
      appendAuditEvent(tx, tenantA, { actor: 'system', action: 'test.seeded', target: null, data: { n } }),
    );
  }
});
after(() => db.drop());

interface Snapshot {
  head: { seq: string; hash: string } | undefined;
  events: { seq: string; hash: string; canonical: string }[];
}

/** A tenant's head and events as the superuser sees them, to show an attempt changed nothing. */
async function snapshot(tenantId: string): Promise<Snapshot> {
  const [head] = await db.superuser<{ seq: string; hash: string }[]>`
    select seq::text, encode(hash, 'hex') as hash from enclave.audit_heads where tenant_id = ${tenantId}`;
  const events = await db.superuser<{ seq: string; hash: string; canonical: string }[]>`
    select seq::text, encode(hash, 'hex') as hash, canonical from enclave.audit_events
    where tenant_id = ${tenantId} order by seq`;
  return { head, events: [...events] };
}

function refusedWith(code: string, message?: RegExp) {
  return (error: Error & { code?: string }) => {
    assert.equal(error.code, code, `${error.code}: ${error.message}`);
    if (message !== undefined) assert.match(error.message, message);
    return true;
  };
}

interface Head {
  seq: string;
  hash: Buffer;
  ts: string;
}

/** Locks the bound tenant's head (as appendAuditEvent does) and hands it to `craft`, which builds what is sent. */
async function appendCrafted(
  tx: TenantSql,
  craft: (head: Head) => { canonical: string; hash: Buffer | null },
): Promise<unknown> {
  const [head] = await tx<Head[]>`select seq, hash, ts from enclave.audit_lock_head()`;
  if (head === undefined) throw new Error('audit_lock_head returned no row');
  const { canonical, hash } = craft(head);
  return tx`select enclave.audit_append(${canonical}, ${hash})`;
}

/** The honest event after `head`, with `change` applied to its fields before canonicalization. */
function nextEvent(head: Head, tenant: string, change: Record<string, unknown> = {}) {
  return {
    v: 1,
    tenant,
    seq: Number(head.seq) + 1,
    ts: head.ts,
    actor: 'system',
    action: 'test.forged',
    target: null,
    data: {},
    ...change,
  };
}

/** Canonical text of `event` (any shape) and its correct hash after `head`, so only the named defect is wrong. */
function signed(head: Head, event: Record<string, unknown>): { canonical: string; hash: Buffer } {
  const canonical = canonicalJson(event);
  return { canonical, hash: eventHash(head.hash, canonical) };
}

async function assertAppendRefused(
  craft: (head: Head) => { canonical: string; hash: Buffer | null },
  code: string,
  message: RegExp,
): Promise<void> {
  const before = await snapshot(tenantA);
  await assert.rejects(
    withTenant(db.app, tenantA, (tx) => appendCrafted(tx, craft)),
    refusedWith(code, message),
  );
  assert.deepEqual(await snapshot(tenantA), before, 'a refused append changed the chain');
}

describe('the audit tables, as enclave_app', () => {
  const statements: readonly [string, string][] = [
    [
      'INSERT into audit_events',
      `insert into audit_events (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash, canonical)
       select tenant_id, seq + 100, occurred_at, actor, action, target, data, prev_hash, hash, canonical
       from audit_events where seq = 1`,
    ],
    ['UPDATE audit_events', `update audit_events set data = '{"n": 99}' where seq = 2`],
    ['DELETE from audit_events', 'delete from audit_events where seq = 3'],
    ['TRUNCATE audit_events', 'truncate audit_events'],
    [
      'INSERT into audit_heads',
      `insert into audit_heads (tenant_id, seq, hash) values (enclave.current_tenant_id(), 0, '\\x${'00'.repeat(32)}')
       on conflict (tenant_id) do update set seq = 0`,
    ],
    ['UPDATE audit_heads', 'update audit_heads set seq = 1'],
    ['DELETE from audit_heads', 'delete from audit_heads'],
    ['TRUNCATE audit_heads', 'truncate audit_heads'],
  ];

  test('AUD-3: INSERT, UPDATE, DELETE and TRUNCATE on audit_events and audit_heads are refused by PostgreSQL (42501 permission denied), with the tenant bound', async () => {
    const before = await snapshot(tenantA);
    assert.equal(before.events.length, 3);
    for (const [what, statement] of statements) {
      await assert.rejects(
        withTenant(db.app, tenantA, (tx) => tx.unsafe(statement)),
        refusedWith('42501', /permission denied/),
        `${what} was not refused`,
      );
    }
    assert.deepEqual(await snapshot(tenantA), before);
  });

  test('AUD-3: enclave_app holds SELECT on the audit tables and nothing else; EXECUTE on the two append functions', async () => {
    const grants = await db.superuser<{ table: string; privileges: string[] }[]>`
      select c.relname as table,
             array(select p from unnest(array['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','REFERENCES','TRIGGER']) p
                   where has_table_privilege('enclave_app', c.oid, p) order by 1) as privileges
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'enclave' and c.relname in ('audit_events', 'audit_heads') order by 1`;
    assert.deepEqual(
      grants.map((row) => ({ ...row })),
      [
        { table: 'audit_events', privileges: ['SELECT'] },
        { table: 'audit_heads', privileges: ['SELECT'] },
      ],
    );
    const [functions] = await db.superuser<{ lock: boolean; append: boolean; definer: boolean[] }[]>`
      select has_function_privilege('enclave_app', 'enclave.audit_lock_head()', 'execute') as lock,
             has_function_privilege('enclave_app', 'enclave.audit_append(text, bytea)', 'execute') as append,
             array(select prosecdef from pg_proc where proname in ('audit_lock_head', 'audit_append') order by proname) as definer`;
    assert.deepEqual({ ...functions }, { lock: true, append: true, definer: [true, true] });
  });
});

describe('audit_append, fed by enclave_app', () => {
  test('AUD-3: the honest event built the same way is accepted (so each refusal below is about its one defect)', async () => {
    const before = await snapshot(tenantA);
    await withTenant(db.app, tenantA, (tx) =>
      appendCrafted(tx, (head) => signed(head, nextEvent(head, tenantA))),
    );
    const afterAppend = await snapshot(tenantA);
    assert.equal(afterAppend.events.length, before.events.length + 1);
  });

  test('AUD-3: a canonical text naming another tenant is refused (42501), even with a correct hash and seq', async () => {
    await assertAppendRefused((head) => signed(head, nextEvent(head, tenantB)), '42501', /another tenant/);
  });

  test('AUD-3: a seq that skips ahead or repeats the head is refused (40001)', async () => {
    await assertAppendRefused(
      (head) => signed(head, nextEvent(head, tenantA, { seq: Number(head.seq) + 2 })),
      '40001',
      /does not follow/,
    );
    await assertAppendRefused(
      (head) => signed(head, nextEvent(head, tenantA, { seq: Number(head.seq) })),
      '40001',
      /does not follow/,
    );
    await assertAppendRefused(
      (head) => signed(head, nextEvent(head, tenantA, { seq: 1 })),
      '40001',
      /does not follow/,
    );
  });

  test('AUD-3: a hash that is not SHA-256(prev_hash ‖ canonical) is refused (22023)', async () => {
    const canonicalOf = (head: Head) => canonicalEvent({ ...nextEvent(head, tenantA) });
    const wrongHashes: readonly [string, (head: Head, canonical: string) => Buffer | null][] = [
      [
        'chained from the genesis hash instead of the head',
        (_head, canonical) => eventHash(GENESIS_HASH, canonical),
      ],
      ['random bytes', () => randomBytes(32)],
      [
        'one bit flipped',
        (head, canonical) => {
          const hash = eventHash(head.hash, canonical);
          hash[0] = (hash[0] ?? 0) ^ 1;
          return hash;
        },
      ],
      ['missing', () => null],
    ];
    for (const [, wrong] of wrongHashes) {
      await assertAppendRefused(
        (head) => {
          const canonical = canonicalOf(head);
          return { canonical, hash: wrong(head, canonical) };
        },
        '22023',
        /hash is not SHA-256/,
      );
    }
  });

  test('AUD-3: an event with a missing, extra or mistyped field is refused (22023)', async () => {
    const defects: readonly ((head: Head) => Record<string, unknown>)[] = [
      (head) => {
        const { data: _data, ...rest } = nextEvent(head, tenantA);
        return rest;
      },
      (head) => {
        const { target: _target, ...rest } = nextEvent(head, tenantA);
        return rest;
      },
      (head) => ({ ...nextEvent(head, tenantA), note: 'extra' }),
      (head) => nextEvent(head, tenantA, { v: 2 }),
      (head) => nextEvent(head, tenantA, { data: ['not', 'an', 'object'] }),
      (head) => nextEvent(head, tenantA, { target: 42 }),
      (head) => nextEvent(head, tenantA, { seq: String(Number(head.seq) + 1) }),
      (head) => nextEvent(head, tenantA, { actor: null }),
    ];
    for (const defect of defects) {
      await assertAppendRefused((head) => signed(head, defect(head)), '22023', /required fields/);
    }
  });

  test('AUD-3: an event whose timestamp is far from now is refused (22023)', async () => {
    for (const offsetMs of [-3600_000, 3600_000, -365 * 86400_000]) {
      await assertAppendRefused(
        (head) =>
          signed(
            head,
            nextEvent(head, tenantA, { ts: new Date(Date.parse(head.ts) + offsetMs).toISOString() }),
          ),
        '22023',
        /time is not now/,
      );
    }
  });

  test('AUD-3: a canonical text that is not JSON is refused (22023)', async () => {
    for (const text of ['not json', '{"v":1', '']) {
      await assertAppendRefused(
        (head) => ({ canonical: text, hash: eventHash(head.hash, text) }),
        '22023',
        /not JSON/,
      );
    }
  });

  test('AUD-3: with no tenant bound, audit_lock_head and audit_append refuse to run (42501)', async () => {
    const before = await snapshot(tenantA);
    const canonical = canonicalEvent({
      tenant: tenantA,
      seq: Number(before.head?.seq ?? 0) + 1,
      ts: new Date().toISOString(),
      actor: 'system',
      action: 'test.unbound',
      target: null,
      data: {},
    });
    const hash = eventHash(Buffer.from(before.head?.hash ?? '', 'hex'), canonical);
    await assert.rejects(
      db.app.begin((tx) => tx`select enclave.audit_append(${canonical}, ${hash})`),
      refusedWith('42501', /no tenant bound/),
    );
    await assert.rejects(
      db.app.begin((tx) => tx`select * from enclave.audit_lock_head()`),
      refusedWith('42501', /no tenant bound/),
    );
    assert.deepEqual(await snapshot(tenantA), before);
  });
});

describe('concurrent appends', () => {
  let wide: Sql;
  before(() => {
    wide = db.connectAs(db.appCredentials, 25);
  });

  test('AUD-3: 50 concurrent appends to one tenant produce seq 1..50, each prev_hash the hash before it (no fork)', async () => {
    const tenant = randomUUID();
    await createTenant(tenant);
    const appended = await Promise.all(
      Array.from({ length: 50 }, (_, n) =>
        withTenant(wide, tenant, (tx) =>
          appendAuditEvent(tx, tenant, {
            actor: 'system',
            action: 'test.concurrent',
            target: null,
            data: { n },
          }),
        ),
      ),
    );
    assert.deepEqual(
      appended.map((event) => event.seq).sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    const rows = await withTenant(
      db.app,
      tenant,
      (tx) =>
        tx<{ seq: string; prev_hash: Buffer; hash: Buffer; data: { n: number } }[]>`
        select seq, prev_hash, hash, data from audit_events order by seq`,
    );
    assert.deepEqual(
      rows.map((row) => Number(row.seq)),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    let prev = GENESIS_HASH;
    for (const row of rows) {
      assert.deepEqual(row.prev_hash, prev, `seq ${row.seq} does not chain from seq ${Number(row.seq) - 1}`);
      prev = row.hash;
    }
    // Every one of the 50 calls is in the chain exactly once.
    assert.deepEqual(
      rows.map((row) => row.data.n).sort((a, b) => a - b),
      Array.from({ length: 50 }, (_, i) => i),
    );
    const [head] = await withTenant(
      db.app,
      tenant,
      (tx) => tx<{ seq: string; hash: Buffer }[]>`select seq, hash from audit_heads`,
    );
    assert.equal(head?.seq, '50');
    assert.deepEqual(head?.hash, prev);
  });

  test('AUD-3: appends to different tenants proceed in parallel: while tenant 1 holds its head lock, tenant 2 appends and commits; a second append to tenant 1 waits', async () => {
    const tenant1 = randomUUID();
    const tenant2 = randomUUID();
    await Promise.all([createTenant(tenant1), createTenant(tenant2)]);
    const locked = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    let holderOpen = true;
    // Transaction A: appends to tenant 1 and stays open, holding tenant 1's head lock.
    const holder = withTenant(wide, tenant1, async (tx) => {
      await appendAuditEvent(tx, tenant1, { actor: 'system', action: 'test.holder', target: null, data: {} });
      locked.resolve();
      await release.promise;
    }).finally(() => {
      holderOpen = false;
    });
    try {
      await locked.promise;
      // Tenant 2: completes and commits while A is still open. lock_timeout turns a shared lock into an error, not a hang.
      const other = await withTenant(wide, tenant2, async (tx) => {
        await tx`set local lock_timeout = '20s'`;
        return appendAuditEvent(tx, tenant2, {
          actor: 'system',
          action: 'test.parallel',
          target: null,
          data: {},
        });
      });
      assert.equal(other.seq, 1);
      assert.equal(holderOpen, true, 'tenant 2 finished only after tenant 1 let go');
      const [committed] = await db.superuser<{ n: number }[]>`
        select count(*)::int as n from enclave.audit_events where tenant_id = ${tenant2}`;
      assert.equal(committed?.n, 1);

      // The control: another append to tenant 1 is made to wait for A's lock.
      const pid = Promise.withResolvers<number>();
      const waiter = withTenant(wide, tenant1, async (tx) => {
        const [row] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`;
        pid.resolve(row?.pid ?? -1);
        return appendAuditEvent(tx, tenant1, {
          actor: 'system',
          action: 'test.waiter',
          target: null,
          data: {},
        });
      });
      const waiterPid = await pid.promise;
      let waiting = false;
      // PostgreSQL reports the wait; each check is one query, with no sleep between.
      for (let i = 0; i < 10_000 && !waiting; i += 1) {
        const [row] = await db.superuser<{ waiting: boolean }[]>`
          select exists (select 1 from pg_locks where pid = ${waiterPid} and not granted) as waiting`;
        waiting = row?.waiting === true;
      }
      assert.equal(waiting, true, 'the second append to tenant 1 did not wait for the head lock');
      release.resolve();
      await holder;
      assert.equal((await waiter).seq, 2);
    } finally {
      release.resolve();
      await holder.catch(() => undefined);
    }
  });
});
