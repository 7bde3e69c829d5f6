import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import type { TransactionSql } from 'postgres';
import {
  appendEvents,
  createTenant,
  daysAgo,
  insertChain,
  tempAuditSetup,
} from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { createCheckpointService } from '../audit/checkpoint-log.ts';
import { canonicalEvent, parseCanonicalEvent } from '../audit/event.ts';
import { createRetentionService, segmentFileName } from '../audit/retention.ts';
import type { AuditSetup } from '../audit/setup.ts';
import { findUnprotectedTables } from '../db/rls-gate.ts';
import { createTaskHandlers, type TaskDeps } from '../jobs/tasks.ts';
import { cronItems } from '../jobs/worker.ts';
import { readPlatformFigures } from '../status/platform-reads.ts';
import { PROBE_ROW_TABLES, PROBE_TENANTS } from './probe-tenants.ts';
import { latestRuns, POSTURE_CHECKS, runVerifier, VERIFIER_TIMEOUT_MS } from './runs.ts';
import { createPostureService, postureTaskName } from './verifiers.ts';

// OPS-5: the verifiers behind /security run against the live database and
// record every run — pass, failed with the fault named, or error with the
// message — in the posture table. Each test has a database of its own, since
// every verifier looks at the whole platform.

const logger = { info: () => {}, error: () => {} };
const made: { db: TestDatabase; dir: string }[] = [];
/** Each database's checkpoint key, publisher and archive. */
const setups = new Map<TestDatabase, AuditSetup>();

after(async () => {
  for (const { db, dir } of made) {
    await db.drop();
    await rm(dir, { recursive: true, force: true });
  }
});

async function freshDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  const { setup, dir } = await tempAuditSetup();
  made.push({ db, dir });
  setups.set(db, setup);
  return db;
}

function setupOf(db: TestDatabase): AuditSetup {
  const setup = setups.get(db);
  assert.ok(setup);
  return setup;
}

const posture = (db: TestDatabase) => createPostureService({ sql: db.app, audit: setupOf(db) });
const checkpoint = (db: TestDatabase) => {
  const { signing, publisher } = setupOf(db);
  return createCheckpointService({ sql: db.app, signing, publisher, logger }).makeCheckpoint();
};

/** The daily archiving job, with a 90-day hot window and 24 cold months. */
const archivePastHotWindow = (db: TestDatabase) =>
  createRetentionService({
    sql: db.app,
    archiveDir: setupOf(db).archiveDir,
    hotDays: 90,
    coldMonths: 24,
    logger,
  }).runRetention();

/** As the attacker: the superuser with triggers off. */
async function asSuperuser(db: TestDatabase, fn: (tx: TransactionSql) => Promise<unknown>): Promise<void> {
  await db.superuser.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await fn(tx);
  });
}

describe('chain integrity', () => {
  test('OPS-5: chain integrity passes on intact chains, counting the events, tenants and checkpoints it verified', async () => {
    const db = await freshDatabase();
    const [a, b] = [await createTenant(db), await createTenant(db)];
    await appendEvents(db, a, 5);
    await appendEvents(db, b, 7);
    await checkpoint(db);
    await appendEvents(db, a, 2);
    await checkpoint(db);
    const run = await posture(db).run('chain_integrity');
    assert.equal(run.result, 'pass', run.details.summary);
    assert.equal(run.details.tenants, 2);
    assert.equal(run.details.events, 14);
    assert.equal(run.details.checkpoints, 2);
    assert.equal(run.details.first_failure, null);
  });

  test('OPS-5: each run verifies the checkpoints signed since the last passing run, linked to its newest; that one changed fails the run', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    await appendEvents(db, tenant, 3);
    await checkpoint(db);
    const first = await posture(db).run('chain_integrity');
    assert.equal(first.result, 'pass', first.details.summary);
    assert.deepEqual([first.details.checkpoints, (first.details.anchor as { size: string }).size], [1, '1']);
    await appendEvents(db, tenant, 2);
    await checkpoint(db);
    const second = await posture(db).run('chain_integrity');
    assert.equal(second.result, 'pass', second.details.summary);
    assert.equal(second.details.checkpoints, 1, 'only the new checkpoint');
    const newest = (second.details.anchor as { size: string }).size;
    await asSuperuser(
      db,
      (tx) => tx`update checkpoints set root = sha256(root) where size = ${newest}::bigint`,
    );
    const third = await posture(db).run('chain_integrity');
    assert.equal(third.result, 'failed');
    assert.match(
      third.details.summary,
      new RegExp(`checkpoint ${newest} is gone or changed since a run verified it`),
    );
  });

  test('OPS-5: a checkpoint older than the last verified one, rewritten after a run verified it, fails the next run (older checkpoints are re-checked in turn)', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    for (let i = 0; i < 3; i++) {
      await appendEvents(db, tenant, 1);
      await checkpoint(db);
    }
    const first = await posture(db).run('chain_integrity');
    assert.equal(first.result, 'pass', first.details.summary);
    assert.equal((first.details.anchor as { size: string }).size, '3');
    const second = await posture(db).run('chain_integrity');
    assert.equal(second.result, 'pass', second.details.summary);
    assert.deepEqual(
      second.details.rechecked,
      { count: 2, to: '0' },
      'checkpoints 1 and 2, then round again',
    );
    await asSuperuser(db, (tx) => tx`update checkpoints set root = sha256(root) where size = 1`);
    const third = await posture(db).run('chain_integrity');
    assert.equal(third.result, 'failed');
    assert.match(third.details.summary, /the checkpoint log: checkpoint 1: .* \(re-checked\)$/);
  });

  test('OPS-5: a tampered audit row makes the chain-integrity run fail, naming the tenant and seq', async () => {
    const db = await freshDatabase();
    const [intact, tampered] = [await createTenant(db), await createTenant(db)];
    await appendEvents(db, intact, 4);
    await appendEvents(db, tampered, 6);
    await checkpoint(db);
    await asSuperuser(db, async (tx) => {
      const [row] = await tx<{ canonical: string }[]>`
        select canonical from audit_events where tenant_id = ${tampered}::uuid and seq = 3`;
      assert.ok(row);
      const forged = canonicalEvent({ ...parseCanonicalEvent(row.canonical), data: { n: 'forged' } });
      await tx`update audit_events set canonical = ${forged} where tenant_id = ${tampered}::uuid and seq = 3`;
    });
    const run = await posture(db).run('chain_integrity');
    assert.equal(run.result, 'failed');
    assert.deepEqual(
      {
        tenant: (run.details.first_failure as { tenant: string }).tenant,
        seq: (run.details.first_failure as { seq: number }).seq,
      },
      { tenant: tampered, seq: 3 },
    );
    assert.match(run.details.summary, new RegExp(`tenant ${tampered} at seq 3`));
    assert.equal(run.details.failed_tenants, 1);
  });

  test('OPS-5: a chain cut back below the head a checkpoint committed to fails chain integrity', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    await appendEvents(db, tenant, 5);
    await checkpoint(db);
    await asSuperuser(db, (tx) => tx`delete from audit_events where tenant_id = ${tenant}::uuid and seq = 5`);
    const run = await posture(db).run('chain_integrity');
    assert.equal(run.result, 'failed');
    assert.match(run.details.summary, /before seq 5 that a checkpoint committed to/);
  });

  test('OPS-5: a checkpoint rewritten in the database fails chain integrity (its note no longer verifies)', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    await appendEvents(db, tenant, 3);
    await checkpoint(db);
    await asSuperuser(db, (tx) => tx`update checkpoints set root = sha256(root)`);
    const run = await posture(db).run('chain_integrity');
    assert.equal(run.result, 'failed');
    assert.match(run.details.summary, /the checkpoint log: checkpoint 1/);
  });
});

describe('runs', () => {
  test('OPS-5: a verifier that throws is recorded as error with its message, never as passing or missing', async () => {
    const db = await freshDatabase();
    const run = await runVerifier(db.app, 'key_hygiene', async () => {
      throw new Error('the key store did not answer');
    });
    assert.equal(run.result, 'error');
    assert.equal(run.details.error, 'the key store did not answer');
    const [latest] = await latestRuns(db.app);
    assert.equal(latest?.check, 'key_hygiene');
    assert.equal(latest?.result, 'error');
    assert.match(latest?.details.summary ?? '', /the key store did not answer/);
  });

  test('OPS-5: a verifier that does not answer within its timeout is recorded as error saying it timed out, so an earlier pass is no longer the latest result', async () => {
    const db = await freshDatabase();
    await runVerifier(db.app, 'key_hygiene', async () => ({ result: 'pass', details: { summary: 'fine' } }));
    const hung = Promise.withResolvers<never>();
    const run = await runVerifier(db.app, 'key_hygiene', () => hung.promise, { timeoutMs: 50 });
    assert.equal(run.result, 'error');
    assert.match(run.details.summary, /timed out/);
    assert.equal(run.details.timed_out, true);
    assert.ok(run.durationMs >= 40, `recorded after the timeout (${run.durationMs} ms)`);
    const [latest] = await latestRuns(db.app);
    assert.deepEqual([latest?.check, latest?.result], ['key_hygiene', 'error']);
    assert.match(latest?.details.summary ?? '', /timed out after 0\.05 s/);
    // The hung work failing later is not an unhandled rejection, and records nothing more.
    hung.reject(new Error('too late'));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const [count] = await db.app<{ n: number }[]>`select count(*)::int as n from posture_runs`;
    assert.equal(count?.n, 2);
    assert.equal(VERIFIER_TIMEOUT_MS, 600_000, 'ten minutes unless a caller says otherwise');
  });

  test('OPS-5: each verifier is an hourly cron task of the worker, and its task records a run', async () => {
    const items = cronItems();
    for (const check of POSTURE_CHECKS) {
      const item = items.find((candidate) => candidate.identifier === postureTaskName(check));
      assert.ok(item, `${check} has a cron item`);
      const ticks = [];
      for (let hour = 0; hour < 24; hour++) {
        for (let min = 0; min < 60; min++) {
          if (item.match({ min, hour, date: 3, month: 12, dow: 4 })) ticks.push({ hour, min });
        }
      }
      assert.equal(ticks.length, 24, 'once an hour, every hour');
      assert.equal(new Set(ticks.map((tick) => tick.min)).size, 1, 'at one minute past each hour');
    }
    const db = await freshDatabase();
    const handlers = createTaskHandlers({ sql: db.app, posture: posture(db) } as unknown as TaskDeps);
    await handlers[postureTaskName('checkpoint_freshness')]?.({});
    const runs = await latestRuns(db.app);
    assert.deepEqual(
      runs.map((run) => [run.check, run.result]),
      [['checkpoint_freshness', 'pass']],
    );
  });
});

describe('tenant isolation probe', () => {
  test('OPS-5: the isolation probe passes through withTenant on the live database; its two tenants are made once, flagged as probes', async () => {
    const db = await freshDatabase();
    const other = await createTenant(db);
    await appendEvents(db, other, 2);
    const first = await posture(db).run('tenant_isolation');
    const second = await posture(db).run('tenant_isolation');
    assert.equal(first.result, 'pass', first.details.summary);
    assert.equal(second.result, 'pass');
    assert.ok((first.details.tables_probed as number) > 10, 'every tenant table is probed');
    const probes = await db.superuser<{ id: string }[]>`select id::text from tenants where probe order by id`;
    assert.deepEqual(
      probes.map((row) => row.id),
      PROBE_TENANTS.map((probe) => probe.id),
    );
  });

  test('OPS-5: the isolation probe fails when a tenant table loses FORCE RLS or gains a policy that reads across tenants', async () => {
    const db = await freshDatabase();
    await db.superuser`alter table enclave.agents no force row level security`;
    await db.superuser`create policy everyone on enclave.user_factors for select using (true)`;
    const run = await posture(db).run('tenant_isolation');
    assert.equal(run.result, 'failed');
    const unprotected = (run.details.unprotected_tables as string[]).join('\n');
    assert.match(unprotected, /enclave\.agents: missing FORCE ROW LEVEL SECURITY/);
    assert.match(unprotected, /enclave\.user_factors: .*"everyone"/);
  });

  test('OPS-5: each probe tenant keeps a row of its own in several tenant tables, made again if one is removed', async () => {
    const db = await freshDatabase();
    const first = await posture(db).run('tenant_isolation');
    assert.equal(first.result, 'pass', first.details.summary);
    assert.ok(PROBE_ROW_TABLES.length >= 4);
    for (const table of PROBE_ROW_TABLES) {
      const rows = await db.superuser.unsafe<{ tenant: string }[]>(
        `select distinct tenant_id::text as tenant from ${table} order by 1`,
      );
      assert.deepEqual(
        rows.map((row) => row.tenant),
        PROBE_TENANTS.map((probe) => probe.id),
        `${table} holds a row of each probe`,
      );
    }
    await db.superuser`delete from enclave.idempotency_keys`;
    const again = await posture(db).run('tenant_isolation');
    assert.equal(again.result, 'pass', again.details.summary);
    const [keys] = await db.superuser<
      { n: number }[]
    >`select count(*)::int as n from enclave.idempotency_keys`;
    assert.equal(keys?.n, 2);
  });

  test('OPS-5: a policy that names current_tenant_id() yet lets every row through passes the RLS gate but fails the isolation probe, naming the table', async () => {
    const db = await freshDatabase();
    await posture(db).run('tenant_isolation');
    // As the superuser: a permissive policy the catalog check takes for a tenant policy.
    await db.superuser`
      create policy leaky on enclave.agents
        using (enclave.current_tenant_id() is not null)
        with check (tenant_id = enclave.current_tenant_id())`;
    try {
      assert.deepEqual(
        await findUnprotectedTables(db.superuser),
        [],
        'the RLS gate alone sees nothing wrong',
      );
      const run = await posture(db).run('tenant_isolation');
      assert.equal(run.result, 'failed');
      assert.deepEqual(run.details.unprotected_tables, []);
      const leaks = run.details.leaks as string[];
      assert.ok(
        leaks.includes('isolation probe A reads 1 rows of other tenants in enclave.agents'),
        leaks.join('\n'),
      );
      assert.ok(
        leaks.includes('isolation probe B reads 1 rows of other tenants in enclave.agents'),
        leaks.join('\n'),
      );
      assert.match(run.details.summary, /enclave\.agents/);
    } finally {
      await db.superuser`drop policy if exists leaky on enclave.agents`;
    }
    const clean = await posture(db).run('tenant_isolation');
    assert.equal(clean.result, 'pass', clean.details.summary);
  });

  test('OPS-5: probe tenants and their rows appear in no listing: not the relay directory or listing queue, the status counts, the audit chains verified or the checkpoint log', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    await appendEvents(db, tenant, 2);
    const probe = await posture(db).run('tenant_isolation');
    assert.equal(probe.result, 'pass', probe.details.summary);
    const probeIds = PROBE_TENANTS.map((p) => p.id);
    const handles = PROBE_TENANTS.map((p) => p.handle);
    const directory = await db.app<{ handle: string }[]>`
      select handle from enclave.relay_directory(null, '{}'::text[], null, null, 100)`;
    assert.deepEqual(
      directory.filter((row) => handles.includes(row.handle)),
      [],
    );
    const queue = await db.app<{ tenant_id: string }[]>`
      select tenant_id::text from enclave.relay_listing_queue(null, 100)`;
    assert.deepEqual(
      queue.filter((row) => probeIds.includes(row.tenant_id)),
      [],
    );
    const figures = await readPlatformFigures(db.app, 5_000);
    assert.equal(figures.runningInstances, 0, 'no probe instance is counted');
    const chains = await db.app<{ tenant: string }[]>`select enclave.posture_chain_tenants()::text as tenant`;
    assert.deepEqual(
      chains.map((row) => row.tenant),
      [tenant],
    );
    await checkpoint(db);
    const chain = await posture(db).run('chain_integrity');
    assert.equal(chain.details.tenants, 1, 'the chain-integrity count leaves the probes out');
    const leaves = await db.superuser<{ n: number }[]>`
      select count(*)::int as n from enclave.checkpoint_leaves where tenant_id = any(${probeIds}::uuid[])`;
    assert.equal(leaves[0]?.n, 0, 'the public checkpoint log names no probe');
  });
});

describe('retention SLO', () => {
  test('OPS-5: retention fails while an event is past the hot window, passes once archived (the chain still verifies across the archive), and fails on an altered or missing segment', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(100, 3));
    await appendEvents(db, tenant, 1);
    const late = await posture(db).run('retention_slo');
    assert.equal(late.result, 'failed');
    assert.equal(late.details.oldest_hot_event_age_days, 100);
    await archivePastHotWindow(db);
    const archived = await posture(db).run('retention_slo');
    assert.equal(archived.result, 'pass', archived.details.summary);
    assert.equal(archived.details.archive_segments, 1);
    // The chain still verifies: its events in the database link from the archive's last hash.
    await checkpoint(db);
    const chain = await posture(db).run('chain_integrity');
    assert.equal(chain.result, 'pass', chain.details.summary);
    const file = path.join(setupOf(db).archiveDir, tenant, segmentFileName(1, 3));
    await rm(file);
    await writeFile(file, 'not gzip');
    const altered = await posture(db).run('retention_slo');
    assert.equal(altered.result, 'failed');
    assert.match(altered.details.summary, /segment 1–3 is not a readable gzip file/);
    await rm(file);
    const missing = await posture(db).run('retention_slo');
    assert.equal(missing.result, 'failed');
    assert.match(missing.details.summary, /segment 1–3 is missing from the archive/);
  });

  test('OPS-5: retention fails when an archive segment was deleted before the 24-month cold window', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    await insertChain(db, tenant, daysAgo(100, 3));
    await archivePastHotWindow(db);
    const kept = await posture(db).run('retention_slo');
    assert.equal(kept.result, 'pass', kept.details.summary);
    // As the attacker: the segment's file gone and its manifest marked deleted, 100 days after its last event.
    await rm(path.join(setupOf(db).archiveDir, tenant, segmentFileName(1, 3)));
    await asSuperuser(
      db,
      (tx) => tx`update audit_archive_segments set deleted_at = now() where tenant_id = ${tenant}::uuid`,
    );
    const early = await posture(db).run('retention_slo');
    assert.equal(early.result, 'failed');
    assert.equal(early.details.problem_count, 1);
    assert.match(
      early.details.summary,
      new RegExp(`tenant ${tenant} segment 1–3 was deleted before 24 months`),
    );
    // Past the cold window the same deletion is what retention promises.
    await asSuperuser(
      db,
      (tx) =>
        tx`update audit_archive_segments set last_ts = now() - interval '25 months' where tenant_id = ${tenant}::uuid`,
    );
    const expired = await posture(db).run('retention_slo');
    assert.equal(expired.result, 'pass', expired.details.summary);
    assert.equal(expired.details.segments_deleted_past_cold_window, 1);
  });
});

describe('key hygiene', () => {
  test('OPS-5: key hygiene reports the key ages, and fails while a data key is wrapped by a retired master version', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    const canary = Buffer.alloc(60, 1);
    await db.superuser`insert into vault_master_keys (version, canary) values (1, ${canary})`;
    await db.superuser`
      insert into vault_data_keys (tenant_id, version, master_version, wrapped) values (${tenant}::uuid, 1, 1, ${canary})`;
    const fresh = await posture(db).run('key_hygiene');
    assert.equal(fresh.result, 'pass', fresh.details.summary);
    assert.deepEqual(
      [fresh.details.master_version, fresh.details.master_key_age_days, fresh.details.data_keys],
      [1, 0, 1],
    );
    await db.superuser`insert into vault_master_keys (version, canary) values (2, ${canary})`;
    const retired = await posture(db).run('key_hygiene');
    assert.equal(retired.result, 'failed');
    assert.equal(retired.details.data_keys_wrapped_by_retired_master, 1);
    assert.match(retired.details.summary, /1 data keys are still wrapped by a retired master version/);
  });

  test('OPS-5: key hygiene fails when the master key version or a tenant data key is older than 365 days', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    const canary = Buffer.alloc(60, 1);
    await db.superuser`
      insert into vault_master_keys (version, canary, created_at) values (1, ${canary}, now() - interval '400 days')`;
    await db.superuser`
      insert into vault_data_keys (tenant_id, version, master_version, wrapped) values (${tenant}::uuid, 1, 1, ${canary})`;
    const oldMaster = await posture(db).run('key_hygiene');
    assert.equal(oldMaster.result, 'failed');
    assert.equal(oldMaster.details.master_key_age_days, 400);
    assert.equal(oldMaster.details.summary, 'master key version 1 is 400 days old');
    await db.superuser`update vault_master_keys set created_at = now()`;
    await db.superuser`update vault_data_keys set created_at = now() - interval '366 days'`;
    const oldDataKey = await posture(db).run('key_hygiene');
    assert.equal(oldDataKey.result, 'failed');
    assert.equal(oldDataKey.details.oldest_current_data_key_age_days, 366);
    assert.equal(oldDataKey.details.summary, 'a tenant data key is 366 days old');
    // A rotated tenant: its newest key is what counts, the old version stays for old ciphertext.
    await db.superuser`
      insert into vault_data_keys (tenant_id, version, master_version, wrapped) values (${tenant}::uuid, 2, 1, ${canary})`;
    const rotated = await posture(db).run('key_hygiene');
    assert.equal(rotated.result, 'pass', rotated.details.summary);
  });
});

describe('checkpoint freshness', () => {
  test('OPS-5: checkpoint freshness fails while an event has waited past the delay for a checkpoint, and passes once one is signed', async () => {
    const db = await freshDatabase();
    const tenant = await createTenant(db);
    await insertChain(db, tenant, [new Date(Date.now() - 10 * 60_000)]);
    const waiting = await posture(db).run('checkpoint_freshness');
    assert.equal(waiting.result, 'failed');
    assert.equal(waiting.details.tenants_waiting, 1);
    assert.ok((waiting.details.oldest_waiting_seconds as number) >= 600);
    await checkpoint(db);
    const signed = await posture(db).run('checkpoint_freshness');
    assert.equal(signed.result, 'pass', signed.details.summary);
    assert.equal(signed.details.latest_size, '1');
  });
});
