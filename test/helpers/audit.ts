import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { appendAuditEvent } from '../../src/audit/append.ts';
import { canonicalEvent, eventHash, GENESIS_HASH } from '../../src/audit/event.ts';
import { type AuditConfig, type AuditSetup, createAuditSetup } from '../../src/audit/setup.ts';
import { loadConfig } from '../../src/config.ts';
import { withTenant } from '../../src/db/tenant.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';

// Checkpoint key and audit storage for tests: a fresh Ed25519 key in memory
// (never on disk) and the directories the config names; tenants with events
// appended through the real append path.

/** The audit setup for `config` (default: the test config, whose directories do not exist). */
export function testAuditSetup(
  config: AuditConfig = loadConfig({ ENCLAVE_DATA_DIR: '/nonexistent-enclave-test' }, process.cwd()),
): AuditSetup {
  return createAuditSetup(config, generateKeyPairSync('ed25519').privateKey);
}

/** An audit setup whose checkpoint and archive directories are under a fresh temporary directory. */
export async function tempAuditSetup(
  env: Record<string, string> = {},
): Promise<{ setup: AuditSetup; dir: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-audit-'));
  const config = loadConfig(
    { ENCLAVE_DATA_DIR: dir, ENCLAVE_PUBLIC_URL: 'https://enclave.test', ...env },
    dir,
  );
  return { setup: testAuditSetup(config), dir };
}

/** A database and an audit setup for one test file, made before its tests and removed after. */
export function useAuditDatabase(): { readonly db: TestDatabase; readonly setup: AuditSetup } {
  let made: { db: TestDatabase; setup: AuditSetup; dir: string } | undefined;
  const current = () => {
    if (made === undefined) throw new Error('useAuditDatabase: used outside a test');
    return made;
  };
  before(async () => {
    made = { db: await createTestDatabase(), ...(await tempAuditSetup()) };
  });
  after(async () => {
    await made?.db.drop();
    if (made !== undefined) await rm(made.dir, { recursive: true, force: true });
  });
  return {
    get db() {
      return current().db;
    },
    get setup() {
      return current().setup;
    },
  };
}

/** A tenant row made as the superuser, with no events. */
export async function createTenant(db: TestDatabase, name = 'audit test tenant'): Promise<string> {
  const id = randomUUID();
  await db.superuser`insert into tenants (id, name) values (${id}::uuid, ${name})`;
  return id;
}

/** Appends `count` events to the tenant's chain through appendAuditEvent, one transaction each. */
export async function appendEvents(
  db: TestDatabase,
  tenantId: string,
  count: number,
  action = 'test.event',
): Promise<void> {
  for (let i = 0; i < count; i++) {
    await withTenant(db.app, tenantId, (tx) =>
      appendAuditEvent(tx, tenantId, { actor: 'system', action, target: null, data: { n: i } }),
    );
  }
}

/**
 * Continues the tenant's chain with events at the given times, written
 * straight into the tables as the superuser (the append function accepts
 * only the current time; retention needs old events). Returns the new head.
 */
export async function insertChain(
  db: TestDatabase,
  tenantId: string,
  times: readonly Date[],
  action = 'test.event',
): Promise<{ seq: number; hash: Buffer }> {
  const [head] = await db.superuser<{ seq: string; hash: Buffer }[]>`
    select seq::text, hash from audit_heads where tenant_id = ${tenantId}::uuid`;
  let seq = Number(head?.seq ?? 0);
  let prev = head?.hash ?? Buffer.from(GENESIS_HASH);
  const rows = {
    seq: [] as number[],
    ts: [] as string[],
    canonical: [] as string[],
    prev: [] as string[],
    hash: [] as string[],
  };
  for (const time of times) {
    seq++;
    const canonical = canonicalEvent({
      tenant: tenantId,
      seq,
      ts: time.toISOString(),
      actor: 'system',
      action,
      target: null,
      data: { n: seq },
    });
    const hash = eventHash(prev, canonical);
    rows.seq.push(seq);
    rows.ts.push(time.toISOString());
    rows.canonical.push(canonical);
    rows.prev.push(prev.toString('hex'));
    rows.hash.push(hash.toString('hex'));
    prev = hash;
  }
  await db.superuser.begin(async (tx) => {
    await tx`
      insert into audit_events (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash, canonical)
      select ${tenantId}::uuid, u.seq, u.ts, (u.c::jsonb) ->> 'actor', (u.c::jsonb) ->> 'action',
             (u.c::jsonb) ->> 'target', (u.c::jsonb) -> 'data', decode(u.prev, 'hex'), decode(u.hash, 'hex'), u.c
      from unnest(${rows.seq}::bigint[], ${rows.ts}::timestamptz[], ${rows.canonical}::text[], ${rows.prev}::text[],
                  ${rows.hash}::text[]) as u(seq, ts, c, prev, hash)`;
    await tx`
      insert into audit_heads (tenant_id, seq, hash) values (${tenantId}::uuid, ${seq}, ${prev})
      on conflict (tenant_id) do update set seq = excluded.seq, hash = excluded.hash`;
  });
  return { seq, hash: prev };
}

/** `count` times, one second apart, starting `daysAgo` days before now. */
export function daysAgo(days: number, count: number): Date[] {
  const start = Date.now() - days * 86_400_000;
  return Array.from({ length: count }, (_, i) => new Date(start + i * 1000));
}
