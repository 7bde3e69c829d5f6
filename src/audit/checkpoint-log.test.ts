import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { appendEvents, createTenant, tempAuditSetup } from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { withTenant } from '../db/tenant.ts';
import { createCheckpointService, loadTenantProof } from './checkpoint-log.ts';
import { headLeafHash, headMapEntryHash, parseHeadMapExtension } from './leaf.ts';
import { rootFromLeafHashes, verifyConsistency, verifyInclusion } from './merkle.ts';
import { formatCheckpoint, signNote, verifyCheckpoint } from './note.ts';
import type { AuditSetup } from './setup.ts';

// AUD-4: the checkpoint log. One leaf per tenant whose head moved, an RFC 6962
// root over all leaves, a C2SP note signed with the operator key, published
// write-once; the app role cannot write the log except through the two
// functions that build it from real heads.

let db: TestDatabase;
let setup: AuditSetup;
let dir: string;
const errors: unknown[] = [];
const logger = { info: () => {}, error: (fields: unknown) => errors.push(fields) };

before(async () => {
  db = await createTestDatabase();
  ({ setup, dir } = await tempAuditSetup());
});
after(async () => {
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

const service = () =>
  createCheckpointService({ sql: db.app, signing: setup.signing, publisher: setup.publisher, logger });

async function heads(): Promise<Map<string, { seq: number; hash: Buffer }>> {
  const rows = await db.superuser<{ tenant_id: string; seq: string; hash: Buffer }[]>`
    select tenant_id, seq::text, hash from audit_heads where seq > 0`;
  return new Map(rows.map((row) => [row.tenant_id, { seq: Number(row.seq), hash: row.hash }]));
}

describe('checkpoint log', () => {
  let tenantA: string;
  let tenantB: string;

  before(async () => {
    tenantA = await createTenant(db);
    tenantB = await createTenant(db);
    await appendEvents(db, tenantA, 3);
    await appendEvents(db, tenantB, 2);
  });

  test('AUD-4: a checkpoint commits to every moved head, signs the RFC 6962 root and publishes it write-once', async () => {
    const made = await service().makeCheckpoint();
    assert.equal(made.created, true);
    const moved = await heads();
    assert.equal(made.leavesAppended, moved.size, 'one leaf per tenant with events');
    assert.equal(made.checkpoint.size, BigInt(moved.size));
    const leaves = await db.superuser<
      { tenant_id: string; seq: string; head_hash: Buffer; leaf_hash: Buffer }[]
    >`
      select tenant_id, seq::text, head_hash, leaf_hash from checkpoint_leaves order by idx`;
    for (const leaf of leaves) {
      const head = moved.get(leaf.tenant_id);
      assert.deepEqual({ seq: Number(leaf.seq), hash: leaf.head_hash }, head);
      // The leaf built in SQL is the leaf the pure code (and so the verifier) builds.
      assert.deepEqual(
        leaf.leaf_hash,
        headLeafHash({ tenant: leaf.tenant_id, seq: Number(leaf.seq), hash: leaf.head_hash }),
      );
    }
    assert.deepEqual(made.checkpoint.root, rootFromLeafHashes(leaves.map((leaf) => leaf.leaf_hash)));
    const checkpoint = verifyCheckpoint(
      made.checkpoint.note,
      setup.signing.verifierKey,
      'enclave.test/enclave/audit',
    );
    assert.equal(checkpoint.size, made.checkpoint.size);
    const published = await readFile(
      path.join(setup.publisher.location, `checkpoint-${made.checkpoint.size}.note`),
      'utf8',
    );
    assert.equal(published, made.checkpoint.note);
  });

  test('AUD-4: with no head moved, a run appends nothing and signs nothing new', async () => {
    const before = await service().makeCheckpoint();
    const again = await service().makeCheckpoint();
    assert.equal(again.created, false);
    assert.equal(again.leavesAppended, 0);
    assert.equal(again.checkpoint.size, before.checkpoint.size);
  });

  test('AUD-4: only the tenants whose head moved get a new leaf; proofs of inclusion and consistency verify', async () => {
    const first = await service().makeCheckpoint();
    await appendEvents(db, tenantA, 2);
    const second = await service().makeCheckpoint();
    assert.equal(second.leavesAppended, 1);
    assert.equal(second.checkpoint.size, first.checkpoint.size + 1n);
    const proof = await withTenant(db.app, tenantA, (tx) =>
      loadTenantProof(tx, tenantA, { fromSizes: [first.checkpoint.size] }),
    );
    assert.equal(proof.leaves.length, 2, 'tenant A has a leaf in each checkpoint');
    const newest = proof.leaves.at(-1);
    assert.ok(newest !== undefined);
    assert.equal(newest.seq, 5);
    verifyInclusion(
      newest.index,
      second.checkpoint.size,
      headLeafHash(newest),
      newest.inclusion,
      second.checkpoint.root,
    );
    const [consistency] = proof.consistency;
    assert.ok(consistency !== undefined);
    verifyConsistency(
      first.checkpoint.size,
      second.checkpoint.size,
      first.checkpoint.root,
      second.checkpoint.root,
      consistency.proof,
    );
  });

  test('AUD-4: two checkpoint runs at once serialize: one signs, the other finds nothing new', async () => {
    await appendEvents(db, tenantB, 1);
    const [one, two] = await Promise.all([service().makeCheckpoint(), service().makeCheckpoint()]);
    assert.deepEqual([one.created, two.created].sort(), [false, true]);
    assert.equal(one.checkpoint.size, two.checkpoint.size);
    assert.equal(one.checkpoint.note, two.checkpoint.note);
  });

  test('AUD-4: the app role cannot write the log directly, and checkpoint_record refuses a wrong size, a made-up root, or a second note for a size', async () => {
    for (const statement of [
      `insert into checkpoint_leaves (idx, tenant_id, seq, head_hash, leaf_hash) values (999, '${tenantA}', 1, '\\x${'00'.repeat(32)}', '\\x${'00'.repeat(32)}')`,
      'update checkpoint_leaves set seq = seq + 1',
      'delete from checkpoint_leaves',
      `insert into checkpoints (size, root, note) values (999, '\\x${'00'.repeat(32)}', 'x')`,
      "update checkpoints set note = 'x'",
      'delete from checkpoints',
      'truncate checkpoints',
    ]) {
      await assert.rejects(db.app.unsafe(statement), { code: '42501' }, statement);
    }
    const latest = (await service().makeCheckpoint()).checkpoint;
    await assert.rejects(
      db.app`select enclave.checkpoint_record(${(latest.size + 5n).toString()}::bigint, ${latest.root}, ${latest.note})`,
      /is not the number of leaves/,
    );
    await assert.rejects(
      db.app`select enclave.checkpoint_record(${latest.size.toString()}::bigint, ${Buffer.alloc(32)}, ${latest.note})`,
      /the root is not the root of the log/,
    );
    await assert.rejects(
      db.app`select enclave.checkpoint_record(${latest.size.toString()}::bigint, ${latest.root}, ${`${latest.note}x`})`,
      /another checkpoint of size/,
    );
  });

  test('AUD-4: a checkpoint over leaves appended by the app role with a made-up root is refused; only the root of the stored leaves is recorded', async () => {
    await appendEvents(db, tenantA, 1);
    const appended = await db.app`select * from enclave.checkpoint_append_leaves()`;
    assert.ok(appended.length >= 1);
    const [leaves] = await db.app<{ n: string }[]>`select (max(idx) + 1)::text as n from checkpoint_leaves`;
    const newSize = BigInt(leaves?.n ?? '0');
    const made = `made-up/enclave/audit\n${newSize}\n${Buffer.alloc(32, 7).toString('base64')}\n\n`;
    await assert.rejects(
      db.app`select enclave.checkpoint_record(${newSize.toString()}::bigint, ${Buffer.alloc(32, 7)}, ${made})`,
      /the root is not the root of the log/,
    );
    const [stored] = await db.app<
      { root: Buffer }[]
    >`select enclave.checkpoint_root(${newSize.toString()}::bigint) as root`;
    const hashes = await db.app<
      { leaf_hash: Buffer }[]
    >`select leaf_hash from checkpoint_leaves order by idx`;
    assert.deepEqual(stored?.root, rootFromLeafHashes(hashes.map((row) => row.leaf_hash)));
    assert.equal((await service().makeCheckpoint()).checkpoint.size, newSize);
  });

  test('AUD-4: a checkpoint recorded with a note signed by another key is never published, and the run says so instead of nothing to sign', async () => {
    await appendEvents(db, tenantB, 1);
    await db.app`select * from enclave.checkpoint_append_leaves()`;
    const [leaves] = await db.app<{ n: string }[]>`select (max(idx) + 1)::text as n from checkpoint_leaves`;
    const size = BigInt(leaves?.n ?? '0');
    const [computed] = await db.app<
      { root: Buffer }[]
    >`select enclave.checkpoint_root(${size.toString()}::bigint) as root`;
    const root = computed?.root ?? Buffer.alloc(32);
    const other = generateKeyPairSync('ed25519').privateKey;
    const forged = signNote(formatCheckpoint({ origin: setup.signing.origin, size, root }), {
      name: setup.signing.origin,
      privateKey: other,
    });
    await db.app`select enclave.checkpoint_record(${size.toString()}::bigint, ${root}, ${forged})`;
    const made = await service().makeCheckpoint();
    assert.equal(made.created, false);
    assert.deepEqual(made.refused, [size]);
    const files = await readdir(setup.publisher.location);
    assert.equal(files.includes(`checkpoint-${size}.note`), false, 'the forged note was published');
    // The next real checkpoint is signed and published as usual; the forged one stays unpublished.
    await appendEvents(db, tenantB, 1);
    const next = await service().makeCheckpoint();
    assert.equal(next.created, true);
    assert.deepEqual(next.refused, [size]);
    assert.ok((await readdir(setup.publisher.location)).includes(`checkpoint-${next.checkpoint.size}.note`));
  });

  test('AUD-8: every checkpoint note carries the head map root: RFC 6962 over each tenant’s newest leaf in tenant id order, with a proof per tenant', async () => {
    const tenants = [await createTenant(db), await createTenant(db), await createTenant(db)];
    for (const [i, tenant] of tenants.entries()) await appendEvents(db, tenant, i + 1);
    const made = (await service().makeCheckpoint()).checkpoint;
    const opened = verifyCheckpoint(made.note, setup.signing.verifierKey, setup.signing.origin);
    const map = parseHeadMapExtension(opened.extensions);
    assert.ok(map !== undefined, 'the note carries the head map');
    const heads = await db.superuser<{ tenant_id: string; seq: string; head_hash: Buffer }[]>`
      select distinct on (tenant_id) tenant_id, seq::text, head_hash from checkpoint_leaves
      order by tenant_id, idx desc`;
    const entries = heads.map((h) =>
      headMapEntryHash({ tenant: h.tenant_id, seq: Number(h.seq), hash: h.head_hash }),
    );
    assert.equal(map.size, BigInt(entries.length));
    assert.deepEqual(map.root, rootFromLeafHashes(entries));
    for (const tenant of tenants) {
      const [row] = await db.app<
        { entry_index: string; entry_seq: string; entry_hash: Buffer; proof: Buffer[] }[]
      >`
        select entry_index::text, entry_seq::text, entry_hash, proof from enclave.checkpoint_head_map(${tenant}::uuid)`;
      assert.ok(row !== undefined);
      const hash = headMapEntryHash({ tenant, seq: Number(row.entry_seq), hash: row.entry_hash });
      verifyInclusion(BigInt(row.entry_index), map.size, hash, row.proof, map.root);
    }
  });

  test('AUD-4: the owner-only heads policy does not let the app role read another tenant’s head', async () => {
    const seen = await withTenant(
      db.app,
      tenantA,
      (tx) => tx<{ tenant_id: string }[]>`select tenant_id from audit_heads`,
    );
    assert.deepEqual(
      seen.map((row) => row.tenant_id),
      [tenantA],
    );
    const unbound = await db.app`select tenant_id from audit_heads`;
    assert.equal(unbound.length, 0);
  });

  test('AUD-4: a published checkpoint is never rewritten: the same note again is fine, another one is an error', async () => {
    const latest = (await service().makeCheckpoint()).checkpoint;
    assert.equal(await setup.publisher.publish(latest.size, latest.note), 'exists');
    await assert.rejects(setup.publisher.publish(latest.size, `${latest.note}x`), {
      code: 'write_once_conflict',
    });
    const files = await readdir(setup.publisher.location);
    assert.ok(
      files.every((file) => /^checkpoint-\d+\.note$/.test(file)),
      `no temporary files left: ${files.join(', ')}`,
    );
  });

  test('AUD-4: a checkpoint that failed to publish is published by the next run', async () => {
    await appendEvents(db, tenantA, 1);
    const made = await service().makeCheckpoint();
    const file = path.join(setup.publisher.location, `checkpoint-${made.checkpoint.size}.note`);
    await rm(file);
    const next = await service().makeCheckpoint();
    assert.equal(next.created, false);
    assert.equal(next.published, 1);
    assert.equal(await readFile(file, 'utf8'), made.checkpoint.note);
  });

  test('AUD-8: a head moved back by an attacker is recorded as a new leaf in public and logged as possible tampering', async () => {
    const tenant = await createTenant(db);
    await appendEvents(db, tenant, 4);
    await service().makeCheckpoint();
    const [third] = await db.superuser<{ hash: Buffer }[]>`
      select hash from audit_events where tenant_id = ${tenant}::uuid and seq = 3`;
    await db.superuser.begin(async (tx) => {
      await tx`set local session_replication_role = replica`;
      await tx`delete from audit_events where tenant_id = ${tenant}::uuid and seq = 4`;
      await tx`update audit_heads set seq = 3, hash = ${third?.hash ?? null} where tenant_id = ${tenant}::uuid`;
    });
    errors.length = 0;
    const made = await service().makeCheckpoint();
    assert.equal(made.leavesAppended, 1);
    const leaves = await db.superuser<{ seq: string }[]>`
      select seq::text from checkpoint_leaves where tenant_id = ${tenant}::uuid order by idx`;
    assert.deepEqual(
      leaves.map((leaf) => leaf.seq),
      ['4', '3'],
    );
    assert.equal(errors.length, 1);
    assert.match(JSON.stringify(errors[0]), new RegExp(tenant));
  });

  test('AUD-4: a tampered published file is left alone and the conflict is reported, not overwritten', async () => {
    await appendEvents(db, tenantB, 1);
    const made = await service().makeCheckpoint();
    const file = path.join(setup.publisher.location, `checkpoint-${made.checkpoint.size}.note`);
    await rm(file);
    await writeFile(file, 'forged\n');
    await assert.rejects(service().makeCheckpoint(), { code: 'write_once_conflict' });
    assert.equal(await readFile(file, 'utf8'), 'forged\n');
  });
});
