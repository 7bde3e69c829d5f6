import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  appendEvents,
  createTenant,
  daysAgo,
  insertChain,
  tempAuditSetup,
} from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { serviceQuery, withTenant } from '../db/tenant.ts';
import { createTaskHandlers } from '../jobs/tasks.ts';
import { writeAuditBundle } from './bundle-export.ts';
import { formatEventLine } from './bundle-format.ts';
import { createCheckpointService } from './checkpoint-log.ts';
import { parseCanonicalEvent } from './event.ts';
import { createRetentionService, manifestFileName, segmentFileName } from './retention.ts';
import { type AuditSetup, createAuditServices } from './setup.ts';
import { verifyBundleFile } from './verify-cli.ts';
import { readIfExists } from './write-once.ts';

const RETENTION_RUN = path.join(import.meta.dirname, '../../test/helpers/retention-run.ts');

// AUD-7: 90 days hot in the database, then write-once cold segments until 24
// months, then gone — each move recorded in the tenant's own chain — and
// verification carries on across every boundary.

let db: TestDatabase;
let setup: AuditSetup;
let dir: string;
let bundles = 0;
const logger = { info: () => {}, error: () => {} };

before(async () => {
  db = await createTestDatabase();
  ({ setup, dir } = await tempAuditSetup());
});
after(async () => {
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

const retention = () =>
  createRetentionService({ sql: db.app, archiveDir: setup.archiveDir, hotDays: 90, coldMonths: 24, logger });
const checkpoint = () =>
  createCheckpointService({
    sql: db.app,
    signing: setup.signing,
    publisher: setup.publisher,
    logger,
  }).makeCheckpoint();

async function events(
  tenant: string,
): Promise<{ seq: number; action: string; data: Record<string, unknown> }[]> {
  const rows = await db.superuser<{ canonical: string }[]>`
    select canonical from audit_events where tenant_id = ${tenant}::uuid order by seq`;
  return rows.map((row) => {
    const event = parseCanonicalEvent(row.canonical);
    return { seq: event.seq, action: event.action, data: event.data };
  });
}

async function bundle(tenant: string) {
  const file = path.join(dir, `bundle-${++bundles}.jsonl`);
  const out = createWriteStream(file);
  await serviceQuery(db.app, { tenantId: tenant, reason: 'retention test export' }, (tx) =>
    writeAuditBundle(tx, tenant, setup, async (line) => {
      if (!out.write(`${line}\n`)) await once(out, 'drain');
    }),
  );
  out.end();
  await once(out, 'close');
  return verifyBundleFile(file);
}

/** SHA-256 of the segment bytes of events first..last, computed from the rows as a verifier would. */
async function segmentDigest(tenant: string, first: number, last: number): Promise<Buffer> {
  const rows = await db.superuser<{ hash: Buffer; prev_hash: Buffer; canonical: string }[]>`
    select hash, prev_hash, canonical from audit_events
    where tenant_id = ${tenant}::uuid and seq between ${first} and ${last} order by seq`;
  const text = rows.map((row) => `${formatEventLine(row.hash, row.prev_hash, row.canonical)}\n`).join('');
  return createHash('sha256').update(text).digest();
}

/** Phase 1 only, as a run that crashed before phase 2 (or never wrote its file) leaves it. */
async function recordPending(tenant: string, first: number, last: number): Promise<Buffer> {
  const digest = await segmentDigest(tenant, first, last);
  await db.app`select enclave.audit_archive_record(${tenant}::uuid, ${first}, ${last}, ${digest}, 90)`;
  return digest;
}

/** Resolves once the named connection waits for a lock of this kind. */
async function waitingOn(name: string, lock: 'advisory' | 'transactionid'): Promise<void> {
  for (let polls = 0; polls < 1000; polls++) {
    const [row] = await db.superuser<{ waiting: boolean }[]>`
      select exists (select 1 from pg_stat_activity
                     where application_name = ${name} and wait_event_type = 'Lock' and wait_event = ${lock}) as waiting`;
    if (row?.waiting === true) return;
    await delay(20);
  }
  throw new Error(`${name} never waited for a ${lock} lock`);
}

async function rowCount(tenant: string): Promise<number> {
  const [row] = await db.superuser<{ n: number }[]>`
    select count(*)::int as n from audit_events where tenant_id = ${tenant}::uuid`;
  return row?.n ?? 0;
}

describe('audit retention', () => {
  test('AUD-7: events past the hot window move to a write-once gzip segment with a manifest, leave the database, and the move is recorded as audit.archived', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(200, 2100)); // seqs 1–2100: more than one export page
    await insertChain(db, tenant, daysAgo(1, 1050)); // seqs 2101–3150: hot
    const result = await retention().runRetention();
    const mine = result.archived.filter((segment) => segment.tenantId === tenant);
    assert.deepEqual(
      mine.map(({ firstSeq, lastSeq }) => [firstSeq, lastSeq]),
      [[1, 2100]],
    );
    const left = await events(tenant);
    assert.equal(left[0]?.seq, 2101, 'the archived events left the database');
    // Reading the events for the segment is system work on tenant data, recorded first (TEN-5).
    assert.deepEqual(left.at(-2)?.data, { reason: 'archive audit events older than the hot window (AUD-7)' });
    const recorded = left.at(-1);
    assert.equal(recorded?.action, 'audit.archived');
    assert.equal(recorded?.seq, 3152);
    assert.equal(mine[0]?.recordedAt, 3152);

    const file = path.join(setup.archiveDir, tenant, segmentFileName(1, 2100));
    const lines = gunzipSync(await readFile(file))
      .toString('utf8')
      .split('\n');
    assert.equal(lines.length, 2101, '2100 lines, each ending in a newline');
    const manifest = JSON.parse(
      await readFile(path.join(setup.archiveDir, tenant, manifestFileName(segmentFileName(1, 2100))), 'utf8'),
    );
    assert.equal(manifest.sha256, recorded?.data.segment_sha256);
    assert.equal(manifest.last_hash, recorded?.data.last_hash);
    assert.deepEqual([manifest.first_seq, manifest.last_seq, manifest.event_count], [1, 2100, 2100]);

    await checkpoint();
    const report = await bundle(tenant);
    assert.deepEqual(report.problems, []);
    assert.equal(report.ok, true);
    assert.equal(report.eventsVerified, 3152, 'archived and hot events verified as one chain');
    assert.deepEqual(report.segments, { total: 1, included: 1, recorded: 1 });
  });

  test('AUD-7: a second run finds nothing more to archive', async () => {
    await retention().runRetention();
    const again = await retention().runRetention();
    assert.equal(again.archived.length, 0);
  });

  test('AUD-7: a segment past the cold window is deleted and recorded as audit.archive_deleted; its manifest stays, and verification links across the gap', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(800, 40)); // past 24 months
    await appendEvents(db, tenant, 3);
    const result = await retention().runRetention();
    assert.ok(result.archived.some((segment) => segment.tenantId === tenant));
    assert.ok(result.deleted >= 1);
    const names = await readdir(path.join(setup.archiveDir, tenant));
    assert.deepEqual(names, [manifestFileName(segmentFileName(1, 40))], 'only the manifest is left');
    const actions = (await events(tenant)).map((event) => event.action);
    assert.deepEqual(actions.slice(-2), ['audit.archived', 'audit.archive_deleted']);
    const [segment] = await withTenant(
      db.app,
      tenant,
      (tx) => tx<{ deleted_at: Date | null }[]>`
      select deleted_at from audit_archive_segments where tenant_id = ${tenant}::uuid`,
    );
    assert.ok(segment?.deleted_at instanceof Date);

    await checkpoint();
    const report = await bundle(tenant);
    assert.deepEqual(report.problems, []);
    assert.equal(report.eventsByManifestOnly, 40);
    assert.deepEqual(report.segments, { total: 1, included: 0, recorded: 1 });
  });

  test('AUD-7: an edited archive segment file fails verification at the edited seq', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(120, 10));
    await appendEvents(db, tenant, 2);
    await retention().runRetention();
    const file = path.join(setup.archiveDir, tenant, segmentFileName(1, 10));
    const lines = gunzipSync(await readFile(file)).toString('utf8');
    await rm(file);
    await writeFile(file, gzipSync(lines.replace('"data":{"n":7}', '"data":{"n":70}')));
    await checkpoint();
    const report = await bundle(tenant);
    assert.equal(report.ok, false);
    assert.equal(report.problems[0]?.seq, 7);
    assert.match(report.problems[0]?.reason ?? '', /seq 7: stored hash/);
  });

  test('AUD-7: the database refuses to archive events inside the hot window, whatever window the caller names', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(30, 5));
    await assert.rejects(
      db.app`select enclave.audit_archive_record(${tenant}::uuid, 1, 5, ${Buffer.alloc(32)}, 0)`,
      /not all older than the hot window/,
    );
    const result = await retention().runRetention();
    assert.ok(!result.archived.some((segment) => segment.tenantId === tenant));
  });

  test('AUD-7: the database refuses a segment whose digest is not of its rows, or that does not start at the oldest event', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(100, 5));
    await assert.rejects(
      db.app`select enclave.audit_archive_record(${tenant}::uuid, 1, 5, ${Buffer.alloc(32)}, 90)`,
      /digest is not the digest of these events/,
    );
    await assert.rejects(
      db.app`select enclave.audit_archive_record(${tenant}::uuid, 2, 5, ${Buffer.alloc(32)}, 90)`,
      /must start at the oldest event not yet archived \(seq 1\)/,
    );
  });

  test('AUD-3, AUD-7: no one deletes or truncates audit rows outside the archive function — not even the owner role', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(100, 3));
    await appendEvents(db, tenant, 1);
    const owner = db.connectAs(db.ownerCredentials, 1);
    const asOwner = (statement: string) =>
      owner.begin(async (tx) => {
        await tx`select set_config('app.tenant_id', ${tenant}, true)`;
        await tx.unsafe(statement);
      });
    await assert.rejects(asOwner('delete from audit_events where seq = 4'), /younger than 90 days/);
    await assert.rejects(
      asOwner('delete from audit_events where seq = 1'),
      /not covered by an archive manifest/,
    );
    await assert.rejects(asOwner('truncate audit_events'), /cannot be truncated/);
    // A recorded segment whose rows are still pending deletion covers nothing yet.
    await recordPending(tenant, 1, 3);
    await assert.rejects(
      asOwner('delete from audit_events where seq = 1'),
      /not covered by an archive manifest/,
    );
    assert.equal(await rowCount(tenant), 4);
  });
  test('AUD-7: rows are deleted only after the recorded digest has committed — never in the transaction that records it', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(100, 4));
    const digest = await segmentDigest(tenant, 1, 4);
    await assert.rejects(
      db.app.begin(async (tx) => {
        await tx`select enclave.audit_archive_record(${tenant}::uuid, 1, 4, ${digest}, 90)`;
        await tx`select enclave.audit_archive_delete_rows(${tenant}::uuid, 1, ${digest})`;
      }),
      /was not recorded by an earlier, committed transaction/,
    );
    await assert.rejects(
      db.app`select enclave.audit_archive_delete_rows(${tenant}::uuid, 1, ${digest})`,
      /no segment of tenant .* starts at seq 1/,
    );
    assert.equal(await rowCount(tenant), 4);
  });

  test('AUD-7: the rows of a recorded segment go only for the digest read back from its file, once', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(100, 4));
    const digest = await recordPending(tenant, 1, 4);
    await assert.rejects(
      db.app`select enclave.audit_archive_delete_rows(${tenant}::uuid, 1, ${Buffer.alloc(32)})`,
      /not the recorded digest/,
    );
    assert.equal(await rowCount(tenant), 4);
    await db.app`select enclave.audit_archive_delete_rows(${tenant}::uuid, 1, ${digest})`;
    assert.equal(await rowCount(tenant), 1, 'only audit.archived is left');
    await assert.rejects(
      db.app`select enclave.audit_archive_delete_rows(${tenant}::uuid, 1, ${digest})`,
      /already deleted/,
    );
  });

  test('AUD-7: a segment left between the phases is exported as rows and verifies; the next run writes its missing file and finishes it', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(120, 30));
    await appendEvents(db, tenant, 2);
    await recordPending(tenant, 1, 20); // a crash after phase 1, and the file never reached the disk
    await checkpoint();
    const pending = await bundle(tenant);
    assert.deepEqual(pending.problems, []);
    assert.deepEqual(
      pending.segments,
      { total: 0, included: 0, recorded: 0 },
      'the pending segment is not exported',
    );
    assert.equal(pending.eventsVerified, 32);
    const expired = await db.app<{ expired_tenant: string }[]>`
      select expired_tenant from enclave.audit_archive_expire(24)`;
    assert.ok(
      !expired.some((row) => row.expired_tenant === tenant),
      'expiry never touches a pending segment',
    );

    const result = await retention().runRetention();
    assert.deepEqual(result.failedTenants, []);
    assert.deepEqual(
      result.archived.filter((segment) => segment.tenantId === tenant).map((s) => [s.firstSeq, s.lastSeq]),
      [
        [1, 20],
        [21, 30],
      ],
      'the pending segment first, then the rest of the window',
    );
    const file = path.join(setup.archiveDir, tenant, segmentFileName(1, 20));
    assert.equal(
      gunzipSync(await readFile(file))
        .toString('utf8')
        .split('\n').length,
      21,
    );
    assert.equal((await events(tenant))[0]?.seq, 31);
    await checkpoint();
    const finished = await bundle(tenant);
    assert.deepEqual(finished.problems, []);
    assert.deepEqual(finished.segments, { total: 2, included: 2, recorded: 2 });
  });

  test('AUD-7: a segment file that is unreadable or holds other events keeps the rows in the database, stops only that tenant, and is reported', async () => {
    const other = await createTenant(db);
    await insertChain(db, other, daysAgo(100, 3));
    for (const [content, expected] of [
      [Buffer.from('not gzip at all'), 'archive_segment_unreadable'],
      [gzipSync('{"other":"events"}\n'), '22023'], // the database refuses the digest read
    ] as const) {
      const tenant = await createTenant(db);
      await insertChain(db, tenant, daysAgo(100, 5));
      await recordPending(tenant, 1, 5);
      const file = path.join(setup.archiveDir, tenant, segmentFileName(1, 5));
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, content);
      const errors: { tenantId?: string; code?: unknown }[] = [];
      const result = await createRetentionService({
        sql: db.app,
        archiveDir: setup.archiveDir,
        hotDays: 90,
        coldMonths: 24,
        logger: {
          info: () => {},
          error: (fields: { tenantId?: string; code?: unknown }) => errors.push(fields),
        },
      }).runRetention();
      assert.ok(result.failedTenants.includes(tenant));
      assert.deepEqual(
        errors.filter((fields) => fields.tenantId === tenant).map(({ code }) => code),
        [expected],
      );
      assert.equal(await rowCount(tenant), 5, 'every event is still in the database');
      assert.ok(!(await events(tenant)).some((event) => event.action === 'audit.archived'));
    }
    assert.ok(!(await events(other)).some((event) => event.seq <= 3), 'the other tenant was archived');
    // The daily job fails, so the queue shows it and retries, after doing every other tenant's work.
    const handlers = createTaskHandlers({
      sql: db.app,
      workerId: 'retention test',
      startedAt: new Date(),
      mailer: { send: async () => {} },
      publicUrl: 'http://127.0.0.1',
      audit: createAuditServices(setup, db.app, logger),
      lifecycle: undefined,
    });
    await assert.rejects(handlers.audit_retention?.(null) ?? Promise.resolve(), {
      code: 'retention_incomplete',
    });
  });
  test('AUD-7: a run killed with SIGKILL after writing a segment, or after recording it, loses no event, and the next run finishes the segment', async () => {
    const locks = db.connectAs(db.ownerCredentials, 2);
    for (const stage of ['before recording', 'before deleting rows'] as const) {
      const tenant = await createTenant(db);
      await insertChain(db, tenant, daysAgo(100, 6));
      await appendEvents(db, tenant, 1);
      const name = `retention-run-${randomUUID()}`;
      // Archivers of a tenant queue on this lock: holding it stops the run just before it records.
      const gate = await locks.reserve();
      await gate`select pg_advisory_lock(hashtext('enclave.audit_archive'), hashtext(${tenant}))`;
      const run = spawn(process.execPath, [RETENTION_RUN], {
        env: {
          ...process.env,
          RETENTION_RUN: JSON.stringify({
            target: db.target,
            credentials: db.appCredentials,
            archiveDir: setup.archiveDir,
            name,
          }),
        },
        stdio: 'ignore',
      });
      await waitingOn(name, 'advisory');
      let releaseHead = () => {};
      let headHeld: Promise<unknown> = Promise.resolve();
      if (stage === 'before deleting rows') {
        // Holding the tenant's head instead stops it after recording, just before it deletes.
        const { promise: locked, resolve: onLocked } = Promise.withResolvers<void>();
        const { promise: release, resolve } = Promise.withResolvers<void>();
        releaseHead = resolve;
        headHeld = locks.begin(async (tx) => {
          await tx`select set_config('app.tenant_id', ${tenant}, true)`;
          await tx`select 1 from audit_heads where tenant_id = ${tenant}::uuid for update`;
          onLocked();
          await release;
        });
        await locked;
        await gate`select pg_advisory_unlock(hashtext('enclave.audit_archive'), hashtext(${tenant}))`;
        await waitingOn(name, 'transactionid');
      }
      run.kill('SIGKILL');
      await once(run, 'exit');
      // The machine went down with it: the statement it was waiting in never runs.
      await db.superuser`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${name}`;
      releaseHead();
      await headHeld;
      await gate`select pg_advisory_unlock_all()`;
      gate.release();

      const file = path.join(setup.archiveDir, tenant, segmentFileName(1, 6));
      assert.ok((await readIfExists(file)) !== undefined, `${stage}: the segment file was written first`);
      assert.equal(await rowCount(tenant), 8, `${stage}: every event is still in the database`);
      const result = await retention().runRetention();
      assert.deepEqual(
        result.archived.filter((segment) => segment.tenantId === tenant).map((s) => [s.firstSeq, s.lastSeq]),
        [[1, 6]],
      );
      await checkpoint();
      const report = await bundle(tenant);
      assert.deepEqual(report.problems, [], stage);
      assert.deepEqual(report.segments, { total: 1, included: 1, recorded: 1 });
      assert.equal(report.eventsVerified, stage === 'before recording' ? 10 : 9);
    }
  });
});
