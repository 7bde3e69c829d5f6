import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { createTenant } from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { appendAuditEvent, PLATFORM_TENANT } from '../audit/append.ts';
import { withTenant } from '../db/tenant.ts';
import { lendCredential, putCredential } from './credentials.ts';
import { checkMasterKeys } from './data-keys.ts';
import type { CredentialAddress } from './envelope.ts';
import { VaultError } from './errors.ts';
import {
  envMasterKeyProvider,
  fileMasterKeyProvider,
  type MasterKeyProvider,
  parseMasterKeys,
} from './master-keys.ts';
import { rotateMasterKey, rotateTenantKey } from './rotation.ts';

// VLT-6: every key in the hierarchy rotates while credentials keep being
// read and written, and a wrong master key stops start-up. Concurrency is
// pinned with locks, not timing: a rotation is held mid-transaction by
// holding the audit head it must append to (or the tenant's key lock), and
// the test watches pg_stat_activity until it is waiting there.

interface Stored {
  readonly address: CredentialAddress;
  value: string;
}

let keyDir: string;
before(async () => {
  keyDir = await mkdtemp(path.join(tmpdir(), 'enclave-rotation-'));
});
after(() => rm(keyDir, { recursive: true, force: true }));

function base64Key(): string {
  return randomBytes(32).toString('base64');
}

async function newKeyFile(): Promise<string> {
  const file = path.join(keyDir, `master-keys-${randomBytes(4).toString('hex')}`);
  await writeFile(file, `1:${base64Key()}\n`, { mode: 0o600 });
  return file;
}

async function createAgent(db: TestDatabase, tenantId: string): Promise<string> {
  const handle = `agent-${randomBytes(6).toString('hex')}`;
  const [row] = await withTenant(
    db.app,
    tenantId,
    (tx) => tx<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      values (${tenantId}::uuid, ${handle}, 'Rotation test agent', 'echo') returning id`,
  );
  assert.ok(row !== undefined);
  return row.id;
}

/** A tenant with `count` credentials spread over two agents. */
async function tenantWithCredentials(
  db: TestDatabase,
  provider: MasterKeyProvider,
  count: number,
): Promise<{ tenantId: string; credentials: Stored[] }> {
  const tenantId = await createTenant(db);
  const agents = [await createAgent(db, tenantId), await createAgent(db, tenantId)];
  const credentials: Stored[] = [];
  for (let i = 0; i < count; i++) {
    const address = { tenantId, agentId: agents[i % 2] ?? '', name: `credential_${i}` };
    const value = `secret-${i}-${randomBytes(16).toString('hex')}`;
    await withTenant(db.app, tenantId, (tx) => putCredential(tx, provider, address, value));
    credentials.push({ address, value });
  }
  return { tenantId, credentials };
}

async function lentEquals(sql: Sql, provider: MasterKeyProvider, stored: Stored): Promise<boolean> {
  return withTenant(sql, stored.address.tenantId, (tx) =>
    lendCredential(tx, provider, stored.address, (plaintext) =>
      plaintext.equals(Buffer.from(stored.value, 'utf8')),
    ),
  );
}

async function assertAllDecrypt(
  sql: Sql,
  provider: MasterKeyProvider,
  credentials: readonly Stored[],
): Promise<void> {
  for (const stored of credentials) {
    assert.equal(await lentEquals(sql, provider, stored), true, stored.address.name);
  }
}

interface Readers {
  /** Resolves once every reader has finished `count` more reads (or one has failed). */
  readMore(count: number): Promise<void>;
  /** Stops the readers and reports how many reads there were and what failed. */
  stop(): Promise<{ reads: number; failures: unknown[] }>;
}

/** Readers that lend credentials in a loop, each through one of `providers` (round robin). */
function startReaders(
  sql: Sql,
  providers: readonly MasterKeyProvider[],
  credentials: readonly Stored[],
  readerCount = 4,
): Readers {
  let stopped = false;
  const reads = Array.from({ length: readerCount }, () => 0);
  const failures: unknown[] = [];
  let waiters: { targets: number[]; resolve: () => void }[] = [];
  const wake = () => {
    waiters = waiters.filter((waiter) => {
      const done = failures.length > 0 || waiter.targets.every((target, i) => (reads[i] ?? 0) >= target);
      if (done) waiter.resolve();
      return !done;
    });
  };
  const loops = reads.map(async (_, reader) => {
    const provider = providers[reader % providers.length];
    assert.ok(provider !== undefined);
    for (let n = reader; !stopped; n++) {
      const stored = credentials[n % credentials.length];
      assert.ok(stored !== undefined);
      try {
        if (!(await lentEquals(sql, provider, stored))) {
          failures.push(new Error(`reader ${reader} got a wrong value for ${stored.address.name}`));
        }
      } catch (error) {
        failures.push(error);
      }
      reads[reader] = (reads[reader] ?? 0) + 1;
      wake();
    }
  });
  return {
    readMore: (count) =>
      new Promise<void>((resolve) => {
        waiters.push({ targets: reads.map((done) => done + count), resolve });
        wake();
      }),
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return { reads: reads.reduce((a, b) => a + b, 0), failures };
    },
  };
}

/** Polls until `condition` holds: each round is one query, so no sleeping. */
async function waitUntil(what: string, condition: () => Promise<boolean>): Promise<void> {
  for (let round = 0; round < 20_000; round++) {
    if (await condition()) return;
  }
  throw new Error(`gave up waiting until ${what}`);
}

/** How many sessions of this database wait on a lock in a statement matching `pattern` (SQL like). */
async function lockWaiters(db: TestDatabase, pattern: string): Promise<number> {
  const [row] = await db.superuser<{ waiting: number }[]>`
    select count(*)::int as waiting from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock' and query like ${pattern}`;
  return row?.waiting ?? 0;
}

/**
 * Another action in the tenant holding its audit head until released: any
 * transaction of that tenant that appends an audit event waits at the append.
 */
async function holdAuditHead(db: TestDatabase, tenantId: string): Promise<{ release(): Promise<void> }> {
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let holding = () => {};
  const held = new Promise<void>((resolve) => {
    holding = resolve;
  });
  const done = withTenant(db.app, tenantId, async (tx) => {
    await appendAuditEvent(tx, tenantId, { actor: 'system', action: 'test.hold', target: null, data: {} });
    holding();
    await released;
  });
  await Promise.race([held, done]);
  return {
    async release() {
      release();
      await done;
    },
  };
}

describe('master-key rotation', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(() => db.drop());

  test('VLT-6: master-key rotation re-wraps every data key while credentials keep being read', async () => {
    const file = await newKeyFile();
    const cli = fileMasterKeyProvider(file, 'the rotating CLI key file');
    // A server in another process: its own provider on the same file, which has read version 1 only.
    const server = fileMasterKeyProvider(file, 'the server key file');
    await checkMasterKeys(db.app, cli);
    await checkMasterKeys(db.app, server);
    const tenants = [
      await tenantWithCredentials(db, cli, 3),
      await tenantWithCredentials(db, cli, 4),
      await tenantWithCredentials(db, cli, 2),
    ];
    const credentials = tenants.flatMap((tenant) => tenant.credentials);
    const heldTenant = tenants[1]?.tenantId ?? '';

    const readers = startReaders(db.app, [server, cli], credentials);
    await readers.readMore(1);
    const hold = await holdAuditHead(db, heldTenant);
    const [rotation] = await Promise.all([
      rotateMasterKey(db.app, cli, 'operator:cli'),
      (async () => {
        // The rotation has re-wrapped the held tenant's data key and waits to record
        // its service query: that re-wrap is not committed yet, others may be.
        await waitUntil('the rotation waits on the held audit head', async () => {
          return (await lockWaiters(db, '%audit_append_event%')) === 1;
        });
        const [held] = await db.superuser<{ master_version: number }[]>`
          select master_version from vault_data_keys where tenant_id = ${heldTenant}::uuid`;
        assert.equal(held?.master_version, 1, 'the held re-wrap is not committed');
        assert.deepEqual([...parseMasterKeys(await readFile(file, 'utf8'), 'key file').keys()], [1, 2]);
        await readers.readMore(3);
        await hold.release();
      })(),
    ]);
    await readers.readMore(2);
    const { reads, failures } = await readers.stop();
    assert.deepEqual(failures, []);
    assert.ok(reads >= 4 * 6, `${reads} reads`);

    assert.deepEqual(rotation, { to: 2, retired: [1], tenants: 3, dataKeys: 3, leftInProvider: [] });
    const dataKeys = await db.superuser<
      { master_version: number }[]
    >`select master_version from vault_data_keys`;
    assert.deepEqual(
      dataKeys.map((row) => row.master_version),
      [2, 2, 2],
    );
    const registered = await db.superuser<{ version: number }[]>`select version from vault_master_keys`;
    assert.deepEqual(
      registered.map((row) => row.version),
      [2],
    );
    assert.deepEqual([...parseMasterKeys(await readFile(file, 'utf8'), 'key file').keys()], [2]);
    assert.equal((await stat(file)).mode & 0o777, 0o600);

    // A provider that has only ever seen the new file: version 1 is truly not needed.
    const fresh = fileMasterKeyProvider(file, 'a fresh provider');
    await checkMasterKeys(db.app, fresh);
    await assertAllDecrypt(db.app, fresh, credentials);

    const [event, ...more] = await db.superuser<{ actor: string; target: string | null; data: unknown }[]>`
      select actor, target, data from audit_events
      where tenant_id = ${PLATFORM_TENANT}::uuid and action = 'vault.master_key_rotated'`;
    assert.equal(more.length, 0);
    assert.deepEqual(
      { ...event },
      {
        actor: 'operator:cli',
        target: null,
        data: { to_version: 2, retired_versions: [1], tenants: 3, data_keys: 3 },
      },
    );
    for (const { tenantId } of tenants) {
      const [row] = await db.superuser<{ count: number }[]>`
        select count(*)::int as count from audit_events
        where tenant_id = ${tenantId}::uuid and action = 'system.service_query'
          and data ->> 'reason' = 'vault: re-wrap data keys under a new master key'`;
      assert.equal(row?.count, 1, `service query recorded for tenant ${tenantId}`);
    }
  });
});

describe('master-key rotation with ENCLAVE_MASTER_KEY', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(() => db.drop());

  test('VLT-6: a master key from the environment rotates only to a version the operator added, which is left for the operator to remove', async () => {
    const [one, two] = [base64Key(), base64Key()];
    const onlyOne = envMasterKeyProvider(`1:${one}`);
    await checkMasterKeys(db.app, onlyOne);
    const { credentials } = await tenantWithCredentials(db, onlyOne, 2);

    await assert.rejects(rotateMasterKey(db.app, onlyOne, 'operator:cli'), (error: unknown) => {
      assert.ok(error instanceof VaultError, String(error));
      assert.equal(error.code, 'master_key_read_only');
      assert.match(error.message, /ENCLAVE_MASTER_KEY/);
      return true;
    });
    const unchanged = await db.superuser<{ version: number }[]>`select version from vault_master_keys`;
    assert.deepEqual(
      unchanged.map((row) => row.version),
      [1],
    );

    const both = envMasterKeyProvider(`1:${one}\n2:${two}`);
    const rotation = await rotateMasterKey(db.app, both, 'operator:cli');
    assert.deepEqual(rotation, { to: 2, retired: [1], tenants: 1, dataKeys: 1, leftInProvider: [1] });

    // The operator then drops version 1 from the variable.
    const onlyTwo = envMasterKeyProvider(`2:${two}`);
    await checkMasterKeys(db.app, onlyTwo);
    await assertAllDecrypt(db.app, onlyTwo, credentials);
  });
});

describe('tenant data-key rotation', () => {
  let db: TestDatabase;
  const provider = envMasterKeyProvider(`1:${base64Key()}`);
  before(async () => {
    db = await createTestDatabase();
    await checkMasterKeys(db.app, provider);
  });
  after(() => db.drop());

  /** The tenant's committed key and credential rows, timestamps to the microsecond. */
  const snapshot = async (tenantId: string) => {
    const keys = await db.superuser<
      { version: number; master_version: number; wrapped: Buffer; created_at: string }[]
    >`
      select version, master_version, wrapped, created_at::text as created_at
      from vault_data_keys where tenant_id = ${tenantId}::uuid order by version`;
    const credentials = await db.superuser<{ name: string; key_version: number }[]>`
      select agent_id, name, key_version, ciphertext, nonce, tag, last4,
             created_at::text as created_at, updated_at::text as updated_at
      from credentials where tenant_id = ${tenantId}::uuid order by name`;
    return { keys: [...keys], credentials: [...credentials] };
  };

  test('VLT-6: a tenant data key rotates with its credentials re-encrypted in one transaction', async () => {
    const rotated = await tenantWithCredentials(db, provider, 5);
    const other = await tenantWithCredentials(db, provider, 3);
    const otherBefore = await snapshot(other.tenantId);

    const readers = startReaders(db.app, [provider], [...rotated.credentials, ...other.credentials]);
    await readers.readMore(1);
    const hold = await holdAuditHead(db, rotated.tenantId);
    const [rotation] = await Promise.all([
      rotateTenantKey(db.app, provider, rotated.tenantId, 'operator:cli'),
      (async () => {
        // Every credential is re-encrypted and the old key deleted, uncommitted:
        // readers still see version 1 and its ciphertexts, whole.
        await waitUntil('the rotation waits on the held audit head', async () => {
          return (await lockWaiters(db, '%audit_append_event%')) === 1;
        });
        const committed = await snapshot(rotated.tenantId);
        assert.deepEqual(
          committed.keys.map((row) => row.version),
          [1],
        );
        await readers.readMore(3);
        await hold.release();
      })(),
    ]);
    await readers.readMore(2);
    const { failures } = await readers.stop();
    assert.deepEqual(failures, []);

    assert.deepEqual(rotation, { from: 1, to: 2, credentials: 5, totpSecrets: 0 });
    const after = await snapshot(rotated.tenantId);
    assert.deepEqual(
      after.keys.map((row) => row.version),
      [2],
    );
    assert.deepEqual(
      after.credentials.map((row) => row.key_version),
      [2, 2, 2, 2, 2],
    );
    await assertAllDecrypt(db.app, provider, rotated.credentials);
    assert.deepEqual(
      await snapshot(other.tenantId),
      otherBefore,
      "the other tenant's rows are byte for byte the same",
    );
    await assertAllDecrypt(db.app, provider, other.credentials);

    const events = await db.superuser<{ actor: string; target: string; data: unknown; canonical: string }[]>`
      select actor, target, data, canonical from audit_events
      where tenant_id = ${rotated.tenantId}::uuid and action = 'vault.data_key_rotated'`;
    assert.equal(events.length, 1);
    const [event] = events;
    assert.ok(event !== undefined);
    assert.equal(event.actor, 'operator:cli');
    assert.equal(event.target, `tenant:${rotated.tenantId}`);
    assert.deepEqual(event.data, { from_version: 1, to_version: 2, credentials: 5, totp_secrets: 0 });
    for (const { value } of rotated.credentials) assert.ok(!event.canonical.includes(value));
  });

  test('VLT-6: credential writers during a tenant data-key rotation all succeed and end up under the new key', async () => {
    const { tenantId, credentials } = await tenantWithCredentials(db, provider, 3);
    const agentId = credentials[0]?.address.agentId ?? '';
    const writers = db.connectAs(db.appCredentials, 12);
    const put = (stored: Stored) =>
      withTenant(writers, tenantId, (tx) => putCredential(tx, provider, stored.address, stored.value));

    // An early writer holds the tenant's key lock (shared) with a credential written under key 1, uncommitted.
    const early: Stored = {
      address: { tenantId, agentId, name: 'early_writer' },
      value: `early-${randomBytes(16).toString('hex')}`,
    };
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let wrote = () => {};
    const written = new Promise<void>((resolve) => {
      wrote = resolve;
    });
    const earlyWrite = withTenant(writers, tenantId, async (tx) => {
      const result = await putCredential(tx, provider, early.address, early.value);
      wrote();
      await released;
      return result;
    });
    await Promise.race([written, earlyWrite]);

    const late: Stored[] = Array.from({ length: 8 }, (_, i) => ({
      address: { tenantId, agentId, name: `late_writer_${i}` },
      value: `late-${i}-${randomBytes(16).toString('hex')}`,
    }));
    const replaced = credentials[0];
    assert.ok(replaced !== undefined);
    replaced.value = `replaced-${randomBytes(16).toString('hex')}`;

    const [rotation, lateResults, earlyResult] = await Promise.all([
      rotateTenantKey(db.app, provider, tenantId, 'operator:cli'),
      (async () => {
        await waitUntil('the rotation waits for the tenant key lock', async () => {
          return (await lockWaiters(db, '%pg_advisory_xact_lock%')) === 1;
        });
        // Writers arriving now queue behind the rotation's exclusive request.
        const writes = Promise.all([...late, replaced].map(put));
        await waitUntil('every late writer waits behind the rotation', async () => {
          return (await lockWaiters(db, '%pg_advisory_xact_lock%')) === 1 + late.length + 1;
        });
        release();
        return writes;
      })(),
      earlyWrite,
    ]);

    assert.equal(earlyResult.created, true);
    assert.ok(lateResults.slice(0, late.length).every((result) => result.created));
    assert.equal(lateResults.at(-1)?.created, false);
    // The early credential was committed before the rotation took the lock, so it was re-encrypted.
    assert.deepEqual(rotation, { from: 1, to: 2, credentials: 4, totpSecrets: 0 });
    const after = await snapshot(tenantId);
    assert.deepEqual(
      after.keys.map((row) => row.version),
      [2],
    );
    assert.equal(after.credentials.length, 3 + 1 + late.length);
    assert.ok(after.credentials.every((row) => row.key_version === 2));
    await assertAllDecrypt(db.app, provider, [...credentials, early, ...late]);
  });
});

describe('start-up check of the master key', () => {
  let db: TestDatabase;
  const right = base64Key();
  before(async () => {
    db = await createTestDatabase();
  });
  after(() => db.drop());

  test('VLT-6: a wrong master key stops start-up with a clear error', async () => {
    const provider = envMasterKeyProvider(`1:${right}`);
    await checkMasterKeys(db.app, provider);
    const { credentials } = await tenantWithCredentials(db, provider, 2);
    const state = async () => ({
      masterKeys: [
        ...(await db.superuser`
          select version, canary, created_at::text as created_at from vault_master_keys order by version`),
      ],
      dataKeys: [
        ...(await db.superuser`
          select tenant_id, version, master_version, wrapped, created_at::text as created_at
          from vault_data_keys order by tenant_id, version`),
      ],
    });
    const before = await state();

    const wrong = base64Key();
    await assert.rejects(checkMasterKeys(db.app, envMasterKeyProvider(`1:${wrong}`)), (error: unknown) => {
      assert.ok(error instanceof VaultError, String(error));
      assert.equal(error.code, 'master_key_mismatch');
      assert.match(error.message, /^master key version 1 in ENCLAVE_MASTER_KEY is not the key/);
      assert.ok(!error.message.includes(wrong) && !error.message.includes(right));
      return true;
    });
    const wrongFile = await newKeyFile();
    await assert.rejects(
      checkMasterKeys(db.app, fileMasterKeyProvider(wrongFile, wrongFile)),
      (error: unknown) => {
        assert.ok(error instanceof VaultError, String(error));
        assert.equal(error.code, 'master_key_mismatch');
        assert.ok(error.message.includes(wrongFile), error.message);
        return true;
      },
    );

    // The right key material, but filed as version 2: version 1 is missing.
    await assert.rejects(checkMasterKeys(db.app, envMasterKeyProvider(`2:${right}`)), (error: unknown) => {
      assert.ok(error instanceof VaultError, String(error));
      assert.equal(error.code, 'master_key_unavailable');
      assert.match(error.message, /^master key version 1, .* is not in ENCLAVE_MASTER_KEY$/);
      assert.ok(!error.message.includes(right));
      return true;
    });

    assert.deepEqual(await state(), before, 'nothing in the database changed');
    await checkMasterKeys(db.app, provider);
    await assertAllDecrypt(db.app, provider, credentials);
  });
});
