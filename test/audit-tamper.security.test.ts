// Attack: someone with PostgreSQL superuser rights — a stolen admin password, a rogue DBA, a restored and edited backup — bypasses the server and edits, deletes, reorders, inserts or truncates a tenant's audit rows, or replaces a published checkpoint file, hoping the tenant's offline verification of an export still passes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { TransactionSql } from 'postgres';
import { writeAuditBundle } from '../src/audit/bundle-export.ts';
import { createCheckpointService } from '../src/audit/checkpoint-log.ts';
import { canonicalEvent, eventHash, parseCanonicalEvent } from '../src/audit/event.ts';
import type { JsonObject } from '../src/audit/jcs.ts';
import { checkpointFileName } from '../src/audit/publisher.ts';
import type { AuditSetup } from '../src/audit/setup.ts';
import { serviceQuery } from '../src/db/tenant.ts';
import { appendEvents, createTenant, tempAuditSetup } from './helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from './helpers/database.ts';

// Each attack is followed by what a tenant would do: export a recovery
// bundle, and verify it with the separate enclave-verify program. The
// verifier must fail and name the seq where the evidence first breaks.

const ROOT = path.join(import.meta.dirname, '..');
const VERIFY = path.join(ROOT, 'bin', 'enclave-verify.js');

let db: TestDatabase;
let setup: AuditSetup;
let dir: string;
let exports = 0;

before(async () => {
  db = await createTestDatabase();
  ({ setup, dir } = await tempAuditSetup());
});
after(async () => {
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

const checkpoint = () =>
  createCheckpointService({
    sql: db.app,
    signing: setup.signing,
    publisher: setup.publisher,
    logger: { info: () => {}, error: () => {} },
  }).makeCheckpoint();

/** A tenant with `count` events appended through the server's path, then a checkpoint. */
async function seed(count = 8): Promise<string> {
  const tenant = await createTenant(db);
  await appendEvents(db, tenant, count);
  await checkpoint();
  return tenant;
}

/** The attacker's session: superuser, with triggers off (session_replication_role = replica). */
async function asAttacker(fn: (tx: TransactionSql) => Promise<unknown>): Promise<void> {
  await db.superuser.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await fn(tx);
  });
}

/** The event at `seq` with other data, in canonical form, and its hash from `prev`. */
function forge(canonical: string, prev: Buffer, data: JsonObject, seq?: number) {
  const event = parseCanonicalEvent(canonical);
  const text = canonicalEvent({ ...event, seq: seq ?? event.seq, data });
  return { canonical: text, hash: eventHash(prev, text), data };
}

async function row(tx: TransactionSql, tenant: string, seq: number) {
  const [found] = await tx<{ canonical: string; prev_hash: Buffer; hash: Buffer }[]>`
    select canonical, prev_hash, hash from audit_events where tenant_id = ${tenant}::uuid and seq = ${seq}`;
  assert.ok(found !== undefined, `event ${seq} exists`);
  return found;
}

/** Exports the tenant's bundle as the operator CLI does, then runs enclave-verify on it. */
async function exportAndVerify(
  tenant: string,
  args: readonly string[] = [],
): Promise<{ code: number | null; stdout: string }> {
  const file = path.join(dir, `bundle-${++exports}.jsonl`);
  const out = createWriteStream(file);
  await serviceQuery(db.app, { tenantId: tenant, reason: 'tamper test export' }, (tx) =>
    writeAuditBundle(tx, tenant, setup, async (line) => {
      if (!out.write(`${line}\n`)) await once(out, 'drain');
    }),
  );
  out.end();
  await once(out, 'close');
  const child = spawn(process.execPath, [VERIFY, ...args, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout };
}

function assertFailsAt(result: { code: number | null; stdout: string }, seq: number, why: RegExp): void {
  assert.equal(result.code, 1, result.stdout);
  assert.match(result.stdout, new RegExp(`FAILED: first bad seq ${seq} \\(`), result.stdout);
  assert.match(result.stdout, why, result.stdout);
}

describe('audit tampering, verified offline', () => {
  test('AUD-5: an untouched chain exported as a bundle verifies offline', async () => {
    const tenant = await seed();
    const result = await exportAndVerify(tenant);
    assert.equal(result.code, 0, result.stdout);
    assert.match(result.stdout, /8 verified \(head seq 8\)/);
    assert.match(result.stdout, /OK: every check holds/);
  });

  test('AUD-5: changing one event’s data (and its canonical text) is caught at that seq', async () => {
    const tenant = await seed();
    await asAttacker(async (tx) => {
      const event = await row(tx, tenant, 4);
      const forged = forge(event.canonical, event.prev_hash, { n: 'changed' });
      await tx`update audit_events set canonical = ${forged.canonical}, data = ${tx.json(forged.data)}
               where tenant_id = ${tenant}::uuid and seq = 4`;
    });
    assertFailsAt(await exportAndVerify(tenant), 4, /\(chain\): seq 4: stored hash/);
  });

  test('AUD-8: changing an event and re-chaining every later hash and the head is caught by the first checkpointed seq after it', async () => {
    const tenant = await createTenant(db);
    await appendEvents(db, tenant, 5);
    await checkpoint(); // commits to seq 5
    await appendEvents(db, tenant, 3);
    await checkpoint(); // commits to seq 8
    await asAttacker(async (tx) => {
      let prev = (await row(tx, tenant, 4)).prev_hash;
      for (let seq = 4; seq <= 8; seq++) {
        const event = await row(tx, tenant, seq);
        const forged = forge(
          event.canonical,
          prev,
          seq === 4 ? { n: 'rewritten' } : parseCanonicalEvent(event.canonical).data,
        );
        await tx`update audit_events set canonical = ${forged.canonical}, prev_hash = ${prev}, hash = ${forged.hash}
                 where tenant_id = ${tenant}::uuid and seq = ${seq}`;
        prev = forged.hash;
      }
      await tx`update audit_heads set hash = ${prev} where tenant_id = ${tenant}::uuid`;
    });
    const result = await exportAndVerify(tenant);
    // Every link holds, so only a commitment can tell: the one to seq 5, the first after the change.
    assertFailsAt(result, 5, /\(checkpoint\): seq 5: its hash is not the one the checkpoint committed to/);
  });

  test('AUD-5: deleting a middle event is caught at its seq', async () => {
    const tenant = await seed();
    await asAttacker((tx) => tx`delete from audit_events where tenant_id = ${tenant}::uuid and seq = 4`);
    assertFailsAt(await exportAndVerify(tenant), 4, /expected seq 4, found seq 5/);
  });

  test('AUD-8: deleting the newest events is caught only through the checkpoint, at the first missing seq', async () => {
    const tenant = await seed();
    await asAttacker(async (tx) => {
      const sixth = await row(tx, tenant, 6);
      await tx`delete from audit_events where tenant_id = ${tenant}::uuid and seq > 6`;
      await tx`update audit_heads set seq = 6, hash = ${sixth.hash} where tenant_id = ${tenant}::uuid`;
    });
    const result = await exportAndVerify(tenant);
    // The six events left form a perfect chain; the checkpoint is what says there were eight.
    assertFailsAt(result, 7, /\(completeness\): seq 7: missing .* commits to seq 8/);
    assert.match(result.stdout, /6 verified \(head seq 6\)/);
  });

  test('AUD-8: deleting the newest events, rolling the head back and letting a new checkpoint commit to it is still caught', async () => {
    const tenant = await seed();
    await asAttacker(async (tx) => {
      const sixth = await row(tx, tenant, 6);
      await tx`delete from audit_events where tenant_id = ${tenant}::uuid and seq > 6`;
      await tx`update audit_heads set seq = 6, hash = ${sixth.hash} where tenant_id = ${tenant}::uuid`;
    });
    await checkpoint(); // the new leaf commits to seq 6; the earlier one to seq 8 stays in the log
    const result = await exportAndVerify(tenant);
    assertFailsAt(result, 6, /leaf \d+ commits to seq 6, below seq 8 .*: the head went back/);
    assert.match(result.stdout, /missing .* commits to seq 8/);
  });

  test('AUD-8: newest events deleted, the head rolled back and the newer leaves re-tagged to another tenant: caught by the leaves of an earlier bundle', async () => {
    const tenant = await seed();
    await appendEvents(db, tenant, 4);
    await checkpoint();
    const earlier = await exportAndVerify(tenant);
    assert.equal(earlier.code, 0, earlier.stdout);
    const earlierFile = path.join(dir, `bundle-${exports}.jsonl`);
    const other = await createTenant(db);
    await asAttacker(async (tx) => {
      const eight = await row(tx, tenant, 8);
      await tx`delete from audit_events where tenant_id = ${tenant}::uuid and seq > 8`;
      await tx`update audit_heads set seq = 8, hash = ${eight.hash} where tenant_id = ${tenant}::uuid`;
      // The leaf hashes stay as they are, so the signed roots still hold: only who a leaf belongs to changes.
      await tx`update checkpoint_leaves set tenant_id = ${other}::uuid where tenant_id = ${tenant}::uuid and seq > 8`;
    });
    const result = await exportAndVerify(tenant, ['--previous-checkpoint', earlierFile]);
    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stdout, /of the earlier bundle is missing from this one/);
    // With no earlier bundle at all, the checkpoint's signed head map still names seq 12 as the head.
    const alone = await exportAndVerify(tenant);
    assertFailsAt(alone, 8, /signed head map does not have seq 8 .* as this tenant's head/);
  });

  test('AUD-8: the same attack with the head map row rolled back too: the map no longer matches its signed root', async () => {
    const tenant = await seed();
    await appendEvents(db, tenant, 4);
    await checkpoint();
    const other = await createTenant(db);
    await asAttacker(async (tx) => {
      const eight = await row(tx, tenant, 8);
      const [leaf] = await tx<{ idx: string }[]>`
        select idx::text from checkpoint_leaves where tenant_id = ${tenant}::uuid and seq = 8`;
      await tx`delete from audit_events where tenant_id = ${tenant}::uuid and seq > 8`;
      await tx`update audit_heads set seq = 8, hash = ${eight.hash} where tenant_id = ${tenant}::uuid`;
      await tx`update checkpoint_leaves set tenant_id = ${other}::uuid where tenant_id = ${tenant}::uuid and seq > 8`;
      await tx`update checkpoint_tenant_heads set idx = ${leaf?.idx ?? '0'}::bigint, seq = 8, head_hash = ${eight.hash}
               where tenant_id = ${tenant}::uuid`;
    });
    assertFailsAt(await exportAndVerify(tenant), 8, /signed head map does not have seq 8/);
  });

  test('AUD-5: reordering two events is caught at the first of them', async () => {
    const tenant = await seed();
    await asAttacker(async (tx) => {
      await tx`update audit_events set seq = 1000 where tenant_id = ${tenant}::uuid and seq = 4`;
      await tx`update audit_events set seq = 4 where tenant_id = ${tenant}::uuid and seq = 5`;
      await tx`update audit_events set seq = 5 where tenant_id = ${tenant}::uuid and seq = 1000`;
    });
    assertFailsAt(await exportAndVerify(tenant), 4, /expected seq 4, found seq 5/);
  });

  test('AUD-5: a forged event inserted in the middle, correctly hashed, is caught at the event whose link it broke', async () => {
    const tenant = await seed();
    await asAttacker(async (tx) => {
      for (let seq = 8; seq >= 5; seq--) {
        await tx`update audit_events set seq = ${seq + 1} where tenant_id = ${tenant}::uuid and seq = ${seq}`;
      }
      const fourth = await row(tx, tenant, 4);
      const forged = forge(fourth.canonical, fourth.hash, { n: 'forged' }, 5);
      const event = parseCanonicalEvent(forged.canonical);
      await tx`
        insert into audit_events (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash, canonical)
        values (${tenant}::uuid, 5, ${event.ts}::timestamptz, ${event.actor}, ${event.action}, ${event.target},
                ${tx.json(forged.data)}, ${fourth.hash}, ${forged.hash}, ${forged.canonical})`;
      await tx`update audit_heads set seq = 9 where tenant_id = ${tenant}::uuid`;
    });
    // The forged seq 5 links to seq 4; the real seq 5, now sixth, does not link to it.
    assertFailsAt(await exportAndVerify(tenant), 6, /expected seq 6, found seq 5 \(repeats an earlier seq\)/);
  });

  test('AUD-8: truncating the table is caught: the checkpoint commits to events the bundle lacks', async () => {
    const tenant = await seed();
    await asAttacker((tx) => tx`truncate audit_events`);
    assertFailsAt(await exportAndVerify(tenant), 1, /seq 1: missing .* commits to seq 8/);
  });

  test('AUD-4, AUD-5: a replaced checkpoint file fails its signature', async () => {
    const tenant = await seed();
    const made = await checkpoint();
    const file = path.join(setup.publisher.location, checkpointFileName(made.checkpoint.size));
    const [origin, size, , ...rest] = (await readFile(file, 'utf8')).split('\n');
    // Another root under the honest signature line: what hiding a rewritten log would take.
    const forged = [origin, size, Buffer.alloc(32, 9).toString('base64'), ...rest].join('\n');
    await rm(file);
    await writeFile(file, forged);
    const result = await exportAndVerify(tenant);
    assert.equal(result.code, 1, result.stdout);
    assert.match(
      result.stdout,
      /\[checkpoint\] the checkpoint does not verify: the signature of .* does not verify/,
    );
    // Pinning the operator's published key does not help the forger either.
    const pinned = await exportAndVerify(tenant, ['--key', setup.signing.verifierKey]);
    assert.equal(pinned.code, 1);
  });
});
