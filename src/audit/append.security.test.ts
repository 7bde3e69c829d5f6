// Attack: code running as the app role (a compromised server process, an SQL injection) edits, deletes or forges audit events — writing the tables directly, or feeding the append function a crafted event — or races appends until a tenant's chain forks.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { appendAuditEvent } from './append.ts';
import {
  type CanonicalEventParts,
  canonicalEvent,
  canonicalEventParts,
  eventHash,
  GENESIS_HASH,
} from './event.ts';
import { canonicalJson } from './jcs.ts';

let db: TestDatabase;
/** The owner role, standing in for the SECURITY DEFINER functions that alone may call audit_append(). */
let owner: Sql;
const tenantA = randomUUID();
const tenantB = randomUUID();

async function createTenant(id: string): Promise<void> {
  await withTenant(db.app, id, (tx) => tx`insert into tenants (id, name) values (${id}, ${`tenant ${id}`})`);
}

before(async () => {
  db = await createTestDatabase();
  owner = db.connectAs(db.ownerCredentials, 2);
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
    withTenant(owner, tenantA, (tx) => appendCrafted(tx, craft)),
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

  test('AUD-3: enclave_app holds SELECT on the audit tables and nothing else; EXECUTE only on the append functions that choose the time themselves', async () => {
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
    assert.deepEqual({ ...functions }, { lock: false, append: false, definer: [true, true] });
    const [oneTrip] = await db.superuser<
      { event: boolean; platform: boolean; checked: boolean; owner: string; definer: boolean[] }[]
    >`
      select has_function_privilege('enclave_app', 'enclave.audit_append_event(text, text, text)', 'execute') as event,
             has_function_privilege('enclave_app', 'enclave.audit_append_platform_event(text, text, text)', 'execute')
               as platform,
             has_function_privilege('enclave_app',
               'enclave.audit_insert_checked(text, uuid, text, bytea, bigint, bytea, text)', 'execute') as checked,
             (select pg_get_userbyid(proowner) from pg_proc where proname = 'audit_append_event') as owner,
             array(select prosecdef from pg_proc
                   where proname in ('audit_append_event', 'audit_append_platform_event', 'audit_insert_checked')
                   order by proname) as definer`;
    // The platform wrapper runs as its caller; the checks-and-insert function only inside the definers.
    assert.deepEqual(
      { ...oneTrip },
      { event: true, platform: true, checked: false, owner: 'enclave_owner', definer: [true, false, false] },
    );
  });
});

describe('audit_append, the definer path, fed a crafted event', () => {
  test('AUD-3: enclave_app cannot call audit_lock_head() or audit_append(), so it never chooses the time or the text of an event (42501)', async () => {
    const before = await snapshot(tenantA);
    await assert.rejects(
      withTenant(db.app, tenantA, (tx) =>
        appendCrafted(tx, (head) => signed(head, nextEvent(head, tenantA))),
      ),
      refusedWith('42501', /permission denied/),
    );
    await assert.rejects(
      withTenant(db.app, tenantA, (tx) => tx`select enclave.audit_append('{}', null)`),
      refusedWith('42501', /permission denied/),
    );
    assert.deepEqual(await snapshot(tenantA), before);
  });

  test('AUD-3: the honest event built the same way is accepted (so each refusal below is about its one defect)', async () => {
    const before = await snapshot(tenantA);
    await withTenant(owner, tenantA, (tx) =>
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

  test('AUD-3: an event whose time is not now, is before the previous event, or is not RFC 3339 UTC with milliseconds is refused (22023)', async () => {
    const shifted = (head: Head, offsetMs: number) => new Date(Date.parse(head.ts) + offsetMs).toISOString();
    const defects: readonly [(head: Head) => string, RegExp][] = [
      [(head) => shifted(head, 3600_000), /time is not now/],
      [(head) => shifted(head, 50_000 + 60_000), /time is not now/],
      [(head) => shifted(head, -3600_000), /before the previous event/],
      [(head) => shifted(head, -365 * 86400_000), /before the previous event/],
      [() => 'now', /RFC 3339/],
      [(head) => head.ts.replace('Z', '+00:00'), /RFC 3339/],
      [(head) => head.ts.slice(0, -5).concat('Z'), /RFC 3339/],
      [(head) => `${head.ts.slice(0, 5)}02-30${head.ts.slice(10)}`, /RFC 3339/],
    ];
    for (const [ts, message] of defects) {
      await assertAppendRefused(
        (head) => signed(head, nextEvent(head, tenantA, { ts: ts(head) })),
        '22023',
        message,
      );
    }
  });

  test('AUD-3: a canonical text that is not JSON is refused (22023)', async () => {
    for (const text of ['not json', '{"v":1', '', '[]', 'null', '"{}"']) {
      await assertAppendRefused(
        (head) => ({ canonical: text, hash: eventHash(head.hash, text) }),
        '22023',
        /not JSON/,
      );
    }
  });

  test('AUD-3: an event whose members are right but written another way (v as 1.0, seq with an exponent, a space, a member twice) is refused (22023)', async () => {
    const rewritten: readonly [(canonical: string, seq: string) => string, RegExp][] = [
      [(canonical) => canonical.replace('"v":1}', '"v":1.0}'), /not in canonical \(RFC 8785\) form/],
      [(canonical, seq) => canonical.replace(`"seq":${seq},`, `"seq":${seq}e0,`), /not in canonical/],
      [(canonical) => canonical.replace('"target":null', '"target": null'), /not in canonical/],
      [(canonical) => canonical.replace('"v":1}', '"v":1,"v":1}'), /required fields/],
      [(canonical) => canonical.replace('{"action"', '{"action":"test.forged","action"'), /required fields/],
    ];
    for (const [rewrite, message] of rewritten) {
      await assertAppendRefused(
        (head) => {
          const seq = String(Number(head.seq) + 1);
          const canonical = rewrite(canonicalJson(nextEvent(head, tenantA)), seq);
          assert.notEqual(canonical, canonicalJson(nextEvent(head, tenantA)));
          return { canonical, hash: eventHash(head.hash, canonical) };
        },
        '22023',
        message,
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
      owner.begin((tx) => tx`select enclave.audit_append(${canonical}, ${hash})`),
      refusedWith('42501', /no tenant bound/),
    );
    await assert.rejects(
      owner.begin((tx) => tx`select * from enclave.audit_lock_head()`),
      refusedWith('42501', /no tenant bound/),
    );
    assert.deepEqual(await snapshot(tenantA), before);
  });
});

/** The bound tenant's next event, cut around seq and ts as appendAuditEvent sends it. */
function honestParts(tenant: string, data: Record<string, unknown> = {}): CanonicalEventParts {
  return canonicalEventParts({ tenant, actor: 'system', action: 'test.forged', target: null, data });
}

function appendParts(
  tx: TenantSql,
  parts: { beforeSeq: string | null; beforeTs: string | null; afterTs: string | null },
) {
  return tx<{ seq: string; hash: Buffer }[]>`
    select seq, hash from enclave.audit_append_event(${parts.beforeSeq}, ${parts.beforeTs}, ${parts.afterTs})`;
}

async function assertPartsRefused(
  parts: { beforeSeq: string | null; beforeTs: string | null; afterTs: string | null },
  code: string,
  message: RegExp,
): Promise<void> {
  const before = await snapshot(tenantA);
  await assert.rejects(
    withTenant(db.app, tenantA, (tx) => appendParts(tx, parts)),
    refusedWith(code, message),
    JSON.stringify(parts),
  );
  assert.deepEqual(await snapshot(tenantA), before, 'a refused append changed the chain');
}

describe('audit_append_event (one round trip), fed by enclave_app', () => {
  const honest = () => honestParts(tenantA);
  const tenantPart = `"tenant":"${tenantA}"`;

  test('AUD-3: the honest parts are accepted: seq = head + 1, the stored text is canonicalEvent of the stored fields, hash = SHA-256(prev ‖ text)', async () => {
    const before = await snapshot(tenantA);
    const [row] = await withTenant(db.app, tenantA, (tx) =>
      appendParts(tx, honestParts(tenantA, { n: 'é"\\' })),
    );
    const [stored] = await db.superuser<
      {
        seq: string;
        ts: string;
        actor: string;
        action: string;
        target: string | null;
        data: Record<string, unknown>;
        prev_hash: Buffer;
        hash: Buffer;
        canonical: string;
      }[]
    >`
      select seq, to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ts, actor, action,
             target, data, prev_hash, hash, canonical
      from enclave.audit_events where tenant_id = ${tenantA} order by seq desc limit 1`;
    assert.ok(row !== undefined && stored !== undefined);
    assert.equal(Number(row.seq), Number(before.head?.seq) + 1);
    assert.equal(stored.seq, row.seq);
    assert.deepEqual(stored.hash, row.hash);
    assert.equal(stored.prev_hash.toString('hex'), before.head?.hash);
    assert.equal(
      stored.canonical,
      canonicalEvent({
        tenant: tenantA,
        seq: Number(stored.seq),
        ts: stored.ts,
        actor: stored.actor,
        action: stored.action,
        target: stored.target,
        data: stored.data,
      }),
    );
    assert.deepEqual(stored.hash, eventHash(stored.prev_hash, stored.canonical));
  });

  test("AUD-3: parts that splice into another tenant's event are refused (42501)", async () => {
    await assertPartsRefused(honestParts(tenantB), '42501', /another tenant/);
  });

  test('AUD-3: parts not cut exactly around seq and ts are refused (22023), a member smuggled after ts among them', async () => {
    const parts = honest();
    const miscut: readonly { beforeSeq: string | null; beforeTs: string | null; afterTs: string | null }[] = [
      { ...parts, afterTs: '","v":1,"x":1}' },
      { ...parts, afterTs: '","v":2}' },
      { ...parts, afterTs: `","ts":"${new Date().toISOString()}","v":1}` },
      { ...parts, afterTs: '"}' },
      { ...parts, afterTs: '","v":1' },
      { ...parts, beforeTs: `,"target":null,"tenant":"${tenantA}","ts":"2026-01-01T00:00:00.000Z","zz":"` },
      { ...parts, beforeTs: parts.beforeTs.replace(',"target":null', '') },
      // A seq that is not the whole number token: 4.0, 4e0, "4", 14.
      { ...parts, beforeTs: `.0${parts.beforeTs}` },
      { ...parts, beforeTs: `e0${parts.beforeTs}` },
      { ...parts, beforeSeq: `${parts.beforeSeq}"`, beforeTs: `"${parts.beforeTs}` },
      { ...parts, beforeSeq: `${parts.beforeSeq}1` },
      { ...parts, beforeTs: `0${parts.beforeTs}` },
      { beforeSeq: '', beforeTs: '', afterTs: '' },
      { ...parts, afterTs: null },
      { ...parts, beforeSeq: null },
    ];
    for (const defect of miscut) await assertPartsRefused(defect, '22023', /not cut around seq and ts/);
  });

  test('AUD-3: a member smuggled into a part, left out of one, or given twice, or of the wrong type, is refused (22023)', async () => {
    const parts = honest();
    const smuggled: readonly { beforeSeq: string; beforeTs: string; afterTs: string }[] = [
      { ...parts, beforeSeq: parts.beforeSeq.replace('{"action"', '{"a":0,"action"') },
      { ...parts, beforeTs: parts.beforeTs.replace(tenantPart, `${tenantPart},"x":1`) },
      { ...parts, beforeTs: parts.beforeTs.replace(`,${tenantPart}`, '') },
      { ...parts, beforeSeq: parts.beforeSeq.replace(/"data":\{\},/, '') },
      // Given twice, JSON keeps the last: the text would say one thing and the row another.
      { ...parts, beforeTs: parts.beforeTs.replace(tenantPart, `"tenant":"${tenantB}",${tenantPart}`) },
      { ...parts, beforeSeq: parts.beforeSeq.replace('{"action"', '{"action":"session.login","action"') },
      {
        ...parts,
        beforeTs: parts.beforeTs.replace(tenantPart, `${tenantPart},"ts":"${new Date().toISOString()}"`),
      },
      { ...parts, beforeTs: parts.beforeTs.replace(tenantPart, `${tenantPart},"v":2`) },
      // The members right, the values wrong.
      { ...parts, beforeSeq: parts.beforeSeq.replace('"data":{}', '"data":[]') },
      { ...parts, beforeSeq: parts.beforeSeq.replace('"data":{}', '"data":"{}"') },
      { ...parts, beforeSeq: parts.beforeSeq.replace('"data":{}', '"data":null') },
      { ...parts, beforeTs: parts.beforeTs.replace('"target":null', '"target":42') },
      { ...parts, beforeSeq: parts.beforeSeq.replace('"actor":"system"', '"actor":null') },
    ];
    for (const defect of smuggled) await assertPartsRefused(defect, '22023', /required fields/);
  });

  test('AUD-3: parts that make the text not JSON are refused (22023)', async () => {
    const parts = honest();
    for (const defect of [
      { ...parts, beforeSeq: parts.beforeSeq.slice(1) },
      { ...parts, beforeSeq: parts.beforeSeq.replace('"data":{}', '"data":{') },
      { ...parts, beforeTs: parts.beforeTs.replace(',"tenant"', '"tenant"') },
      { ...parts, beforeSeq: parts.beforeSeq.replace('"system"', '"sys\u0001tem"') },
    ]) {
      await assertPartsRefused(defect, '22023', /not JSON/);
    }
  });

  test('AUD-3: parts whose spliced text parses but is not its own RFC 8785 form are refused (22023)', async () => {
    const parts = honest();
    const data = (text: string) => ({
      ...parts,
      beforeSeq: parts.beforeSeq.replace('"data":{}', `"data":${text}`),
    });
    for (const defect of [
      data('{"b":1,"a":2}'),
      data('{"a":1.0}'),
      data('{"a":1e2}'),
      data('{"a":"\\u0041"}'),
      data('{"a":"\\/"}'),
      data('{ }'),
      data('{"a":[1, 2]}'),
      data('{"a":1,"a":1}'),
      data('{"a":-0}'),
      { ...parts, beforeSeq: parts.beforeSeq.replace('"actor":"system"', '"actor":"syst\\u0065m"') },
    ]) {
      await assertPartsRefused(defect, '22023', /not in canonical \(RFC 8785\) form/);
    }
  });

  test("AUD-3: an actor, action or target outside the format's grammar is refused (22023): Evil Action!, evil actor, a control character", async () => {
    const parts = honest();
    const cases: readonly [typeof parts, RegExp][] = [
      [{ ...parts, beforeSeq: parts.beforeSeq.replace('"test.forged"', '"Evil Action!"') }, /action must be/],
      [{ ...parts, beforeSeq: parts.beforeSeq.replace('"test.forged"', '"forged"') }, /action must be/],
      [{ ...parts, beforeSeq: parts.beforeSeq.replace('"system"', '"evil actor"') }, /actor must be/],
      [{ ...parts, beforeSeq: parts.beforeSeq.replace('"system"', `"${'a'.repeat(257)}"`) }, /actor must be/],
      [{ ...parts, beforeTs: parts.beforeTs.replace('"target":null', '"target":"a\\tb"') }, /target must be/],
      [{ ...parts, beforeTs: parts.beforeTs.replace('"target":null', '"target":""') }, /target must be/],
      [
        { ...parts, beforeTs: parts.beforeTs.replace('"target":null', `"target":"${'t'.repeat(513)}"`) },
        /target must be/,
      ],
    ];
    for (const [defect, message] of cases) await assertPartsRefused(defect, '22023', message);
  });

  test("AUD-3: an event's time never goes back along a chain: after a clock step back, the next event carries the head's time", async () => {
    const tenant = randomUUID();
    await createTenant(tenant);
    await withTenant(db.app, tenant, (tx) => appendParts(tx, honestParts(tenant)));
    // The clock was an hour ahead when the head was written (here: its time is moved on by the superuser).
    const [ahead] = await db.superuser<{ ts: string }[]>`
      update enclave.audit_events set occurred_at = date_trunc('milliseconds', clock_timestamp()) + interval '1 hour'
      where tenant_id = ${tenant} and seq = 1
      returning to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ts`;
    await withTenant(db.app, tenant, (tx) => appendParts(tx, honestParts(tenant)));
    const [next] = await db.superuser<{ canonical: string }[]>`
      select canonical from enclave.audit_events where tenant_id = ${tenant} and seq = 2`;
    assert.equal(JSON.parse(next?.canonical ?? '{}').ts, ahead?.ts);
  });

  test('AUD-3: with no tenant bound, audit_append_event refuses to run (42501)', async () => {
    const before = await snapshot(tenantA);
    const parts = honest();
    await assert.rejects(
      db.app.begin((tx) => appendParts(tx, parts)),
      refusedWith('42501', /no tenant bound/),
    );
    await assert.rejects(
      db.app.begin(async (tx) => {
        await tx`select set_config('app.tenant_id', '', true)`;
        return appendParts(tx, parts);
      }),
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
        tx<
          {
            seq: string;
            ts: string;
            prev_hash: Buffer;
            hash: Buffer;
            canonical: string;
            data: { n: number };
          }[]
        >`
        select seq, to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ts, prev_hash, hash,
               canonical, data
        from audit_events order by seq`,
    );
    assert.deepEqual(
      rows.map((row) => Number(row.seq)),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    let prev = GENESIS_HASH;
    for (const row of rows) {
      assert.deepEqual(row.prev_hash, prev, `seq ${row.seq} does not chain from seq ${Number(row.seq) - 1}`);
      // The text the database spliced is the JCS form of the stored fields, and the hash covers it.
      assert.equal(
        row.canonical,
        canonicalEvent({
          tenant,
          seq: Number(row.seq),
          ts: row.ts,
          actor: 'system',
          action: 'test.concurrent',
          target: null,
          data: row.data,
        }),
      );
      assert.deepEqual(row.hash, eventHash(prev, row.canonical));
      assert.deepEqual(appended.find((event) => event.seq === Number(row.seq))?.hash, row.hash);
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
