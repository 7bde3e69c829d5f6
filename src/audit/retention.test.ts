import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
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
import { writeAuditBundle } from './bundle-export.ts';
import { createCheckpointService } from './checkpoint-log.ts';
import { parseCanonicalEvent } from './event.ts';
import { createRetentionService, manifestFileName, segmentFileName } from './retention.ts';
import type { AuditSetup } from './setup.ts';
import { verifyBundleFile } from './verify-cli.ts';

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
      db.app`select enclave.audit_archive_segment(${tenant}::uuid, 1, 5, ${Buffer.alloc(32)}, 0)`,
      /not all older than the hot window/,
    );
    const result = await retention().runRetention();
    assert.ok(!result.archived.some((segment) => segment.tenantId === tenant));
  });

  test('AUD-7: the database refuses a segment whose digest is not of its rows, or that does not start at the oldest event', async () => {
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(100, 5));
    await assert.rejects(
      db.app`select enclave.audit_archive_segment(${tenant}::uuid, 1, 5, ${Buffer.alloc(32)}, 90)`,
      /digest is not the digest of these events/,
    );
    await assert.rejects(
      db.app`select enclave.audit_archive_segment(${tenant}::uuid, 2, 5, ${Buffer.alloc(32)}, 90)`,
      /must start at the oldest event/,
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
    const [count] = await db.superuser<{ n: number }[]>`
      select count(*)::int as n from audit_events where tenant_id = ${tenant}::uuid`;
    assert.equal(count?.n, 4);
  });
});
