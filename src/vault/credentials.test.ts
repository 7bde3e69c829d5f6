import assert from 'node:assert/strict';
import { createDecipheriv, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { PendingQuery, Row } from 'postgres';
import { createTenant } from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { appendEitherAuditEvent } from '../audit/append.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { lendCredential, lendCredentialAlone, listCredentials, putCredential } from './credentials.ts';
import { checkMasterKeys } from './data-keys.ts';
import type { CredentialAddress } from './envelope.ts';
import { VaultError } from './errors.ts';
import { envMasterKeyProvider } from './master-keys.ts';

// The credential store on a real database: what a row holds, what a moved
// ciphertext does, concurrent writers, and how plaintext is lent and zeroed.

const masterKey = randomBytes(32);
const provider = envMasterKeyProvider(`1:${masterKey.toString('base64')}`);
let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
  await checkMasterKeys(db.app, provider);
});
after(() => db.drop());

async function createAgent(tenantId: string): Promise<string> {
  const handle = `agent-${randomBytes(6).toString('hex')}`;
  const [row] = await withTenant(
    db.app,
    tenantId,
    (tx) => tx<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      values (${tenantId}::uuid, ${handle}, 'Vault test agent', 'echo') returning id`,
  );
  assert.ok(row !== undefined);
  return row.id;
}

function put(address: CredentialAddress, value: string) {
  return withTenant(db.app, address.tenantId, (tx) => putCredential(tx, provider, address, value));
}

/** The credential's value, copied out of the lent Buffer (only a test may keep it as a string). */
function lentValue(address: CredentialAddress): Promise<string> {
  return withTenant(db.app, address.tenantId, (tx) =>
    lendCredential(tx, provider, address, (plaintext) => plaintext.toString('utf8')),
  );
}

function listed(tenantId: string, agentId: string) {
  return withTenant(db.app, tenantId, (tx) => listCredentials(tx, agentId));
}

/** AES-256-GCM decryption straight from node:crypto, not through the code under test. */
function gcmOpen(key: Buffer, nonce: Buffer, ciphertext: Buffer, tag: Buffer, aad: string): Buffer {
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: 16 });
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
}

/** Asserts that no column of `row` holds `secret`, as bytes or as text. */
function assertNotInRow(row: Record<string, unknown>, secret: Buffer, what: string): void {
  for (const [column, value] of Object.entries(row)) {
    const bytes = Buffer.isBuffer(value)
      ? value
      : Buffer.from(value instanceof Date ? value.toISOString() : String(value), 'utf8');
    assert.equal(bytes.indexOf(secret), -1, `${what} found in column ${column}`);
  }
}

function isZeroed(buffer: Buffer): boolean {
  return buffer.length > 0 && buffer.every((byte) => byte === 0);
}

describe('what the database holds', () => {
  test('VLT-1: a stored credential is AES-256-GCM ciphertext under the tenant data key, itself stored only wrapped under the master key', async () => {
    const tenantId = await createTenant(db);
    const address = { tenantId, agentId: await createAgent(tenantId), name: 'anthropic_api_key' };
    const value = `sk-ant-api03-${randomBytes(24).toString('hex')}`;
    const { listing, created } = await put(address, value);
    assert.equal(created, true);
    assert.equal(listing.last4, value.slice(-4));

    const [row] = await db.superuser<Record<string, unknown>[]>`
      select * from credentials where agent_id = ${address.agentId}::uuid and name = ${address.name}`;
    assert.ok(row !== undefined);
    assertNotInRow(row, Buffer.from(value, 'utf8'), 'the value');
    assert.equal(row.key_version, 1);
    assert.equal(row.last4, value.slice(-4));

    const dataKeys = await db.superuser<Record<string, unknown>[]>`
      select * from vault_data_keys where tenant_id = ${tenantId}::uuid`;
    assert.equal(dataKeys.length, 1);
    const [dataKeyRow] = dataKeys;
    assert.ok(dataKeyRow !== undefined && Buffer.isBuffer(dataKeyRow.wrapped));
    assert.equal(dataKeyRow.version, 1);
    assert.equal(dataKeyRow.master_version, 1);
    assert.equal(dataKeyRow.wrapped.length, 60);

    // Recomputed from the stored bytes: the master key opens the data key (associated
    // data: tenant and version), the data key opens the value (tenant, agent, name, version).
    const wrapped = dataKeyRow.wrapped;
    const dataKey = gcmOpen(
      masterKey,
      wrapped.subarray(0, 12),
      wrapped.subarray(12, 44),
      wrapped.subarray(44),
      `enclave.vault.data-key.v1\0${tenantId}\0${1}`,
    );
    assert.equal(dataKey.length, 32);
    assertNotInRow(dataKeyRow, dataKey, 'the unwrapped data key');
    assertNotInRow(row, dataKey, 'the unwrapped data key');
    const plaintext = gcmOpen(
      dataKey,
      row.nonce as Buffer,
      row.ciphertext as Buffer,
      row.tag as Buffer,
      `enclave.vault.credential.v1\0${tenantId}\0${address.agentId}\0${address.name}\0${1}`,
    );
    assert.equal(plaintext.toString('utf8'), value);
  });

  // Attack: someone with write access to the database (a restored backup, a
  // stolen superuser password) copies a ciphertext into a row they can read
  // through, hoping it decrypts there.
  test('VLT-1: a ciphertext copied into another agent, name or tenant does not decrypt there', async () => {
    const tenantA = await createTenant(db);
    const tenantB = await createTenant(db);
    const agentA1 = await createAgent(tenantA);
    const agentA2 = await createAgent(tenantA);
    const agentB1 = await createAgent(tenantB);
    const source = { tenantId: tenantA, agentId: agentA1, name: 'openai_api_key' };
    const sourceValue = `sk-proj-${randomBytes(20).toString('hex')}`;
    const targets: [string, CredentialAddress][] = [
      ['another name of the same agent', { tenantId: tenantA, agentId: agentA1, name: 'github_token' }],
      ['another agent of the same tenant', { tenantId: tenantA, agentId: agentA2, name: 'openai_api_key' }],
      ["another tenant's credential", { tenantId: tenantB, agentId: agentB1, name: 'openai_api_key' }],
    ];
    await put(source, sourceValue);
    for (const [, target] of targets) await put(target, `placeholder-${randomBytes(12).toString('hex')}`);

    for (const [where, target] of targets) {
      const copied = await db.superuser`
        update credentials t
        set ciphertext = s.ciphertext, nonce = s.nonce, tag = s.tag, key_version = s.key_version
        from credentials s
        where s.agent_id = ${source.agentId}::uuid and s.name = ${source.name}
          and t.agent_id = ${target.agentId}::uuid and t.name = ${target.name}`;
      assert.equal(copied.count, 1, where);
      await assert.rejects(
        lentValue(target),
        (error: unknown) => {
          assert.ok(error instanceof VaultError, String(error));
          assert.equal(error.code, 'ciphertext_rejected');
          assert.ok(!error.message.includes(sourceValue));
          return true;
        },
        where,
      );
    }
    assert.equal(await lentValue(source), sourceValue, 'the original still decrypts');
  });

  test("VLT-1: a tenant's wrapped data key copied to another tenant does not unwrap there", async () => {
    const tenantA = await createTenant(db);
    const tenantC = await createTenant(db);
    await put(
      { tenantId: tenantA, agentId: await createAgent(tenantA), name: 'slack_bot_token' },
      'xoxb-aaaa-bbbb-cccc',
    );
    const victim = { tenantId: tenantC, agentId: await createAgent(tenantC), name: 'slack_bot_token' };
    await put(victim, 'xoxb-dddd-eeee-ffff');
    const copied = await db.superuser`
      update vault_data_keys t set wrapped = s.wrapped, master_version = s.master_version
      from vault_data_keys s where s.tenant_id = ${tenantA}::uuid and t.tenant_id = ${tenantC}::uuid`;
    assert.equal(copied.count, 1);
    await assert.rejects(lentValue(victim), { name: 'VaultError', code: 'ciphertext_rejected' });
  });
});

describe('concurrent writers', () => {
  const names = Array.from({ length: 50 }, (_, i) => `credential_${String(i).padStart(2, '0')}`);
  const freshValue = (name: string) => `value-of-${name}-${randomBytes(12).toString('hex')}`;

  test('VLT-4: 50 credentials written at once for one agent are all kept, and re-putting one leaves the other 49 untouched', async () => {
    const tenantId = await createTenant(db);
    const agentId = await createAgent(tenantId);
    const values = new Map(names.map((name) => [name, freshValue(name)]));
    const results = await Promise.all(
      names.map((name) => put({ tenantId, agentId, name }, values.get(name) ?? '')),
    );
    assert.ok(results.every((result) => result.created));

    assert.deepEqual(
      (await listed(tenantId, agentId)).map((listing) => listing.name),
      names,
    );
    for (const name of names)
      assert.equal(await lentValue({ tenantId, agentId, name }), values.get(name), name);

    const stored = () =>
      db.superuser<
        { name: string; ciphertext: Buffer; nonce: Buffer; updated_at: string; created_at: string }[]
      >`
        select name, ciphertext, nonce, updated_at::text, created_at::text from credentials
        where agent_id = ${agentId}::uuid order by name`;
    const before = await stored();
    const rotated = names[17] ?? '';
    const newValue = freshValue(rotated);
    const { created } = await put({ tenantId, agentId, name: rotated }, newValue);
    assert.equal(created, false);
    const afterward = await stored();

    assert.deepEqual(
      afterward.filter((row) => row.name !== rotated),
      before.filter((row) => row.name !== rotated),
      'the other 49 rows are byte for byte what they were, updated_at included',
    );
    const [was] = before.filter((row) => row.name === rotated);
    const [now] = afterward.filter((row) => row.name === rotated);
    assert.ok(was !== undefined && now !== undefined);
    assert.equal(now.created_at, was.created_at);
    assert.notEqual(now.updated_at, was.updated_at);
    assert.notDeepEqual(now.ciphertext, was.ciphertext);
    assert.equal(await lentValue({ tenantId, agentId, name: rotated }), newValue);
    for (const name of names.filter((name) => name !== rotated)) {
      assert.equal(await lentValue({ tenantId, agentId, name }), values.get(name), name);
    }
  });

  test("VLT-4: 50 first writes racing to create a new tenant's data key all succeed, with exactly one data key", async () => {
    const tenantId = await createTenant(db);
    const agentId = await createAgent(tenantId);
    const values = new Map(names.map((name) => [name, freshValue(name)]));
    const results = await Promise.all(
      names.map((name) => put({ tenantId, agentId, name }, values.get(name) ?? '')),
    );
    assert.equal(results.length, 50);

    const dataKeys = await db.superuser<{ version: number }[]>`
      select version from vault_data_keys where tenant_id = ${tenantId}::uuid`;
    assert.deepEqual(
      dataKeys.map((row) => row.version),
      [1],
    );
    const keyVersions = await db.superuser<{ key_version: number; count: number }[]>`
      select key_version, count(*)::int as count from credentials
      where tenant_id = ${tenantId}::uuid group by key_version`;
    assert.deepEqual([...keyVersions], [{ key_version: 1, count: 50 }]);
    for (const name of names)
      assert.equal(await lentValue({ tenantId, agentId, name }), values.get(name), name);
  });
});

describe('lending plaintext', () => {
  let address: CredentialAddress;
  const value = `ghp_${randomBytes(18).toString('hex')}`;

  before(async () => {
    const tenantId = await createTenant(db);
    address = { tenantId, agentId: await createAgent(tenantId), name: 'github_token' };
    await put(address, value);
  });

  function lend<T>(use: (plaintext: Buffer) => Promise<T> | T): Promise<T> {
    return withTenant(db.app, address.tenantId, (tx) => lendCredential(tx, provider, address, use));
  }

  test('VLT-5: the value is lent as a Buffer, intact while in use and zeroed once the borrower is done', async () => {
    const lent: Buffer[] = [];
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let borrowed = (_plaintext: Buffer) => {};
    const inUse = new Promise<Buffer>((resolve) => {
      borrowed = resolve;
    });
    const lending = lend(async (plaintext) => {
      lent.push(plaintext);
      borrowed(plaintext);
      await released;
      return plaintext.equals(Buffer.from(value, 'utf8'));
    });
    const plaintext = await inUse;
    assert.ok(Buffer.isBuffer(plaintext));
    assert.equal(plaintext.toString('utf8'), value, 'intact while the borrower holds it');
    release();
    assert.equal(await lending, true);
    assert.equal(lent.length, 1);
    assert.ok(isZeroed(plaintext), 'the same Buffer is all zeros afterwards');
  });

  test('VLT-5: a borrower that throws gets its error back, and the Buffer is zeroed', async () => {
    const lent: Buffer[] = [];
    const failure = new Error('the upstream call failed');
    await assert.rejects(
      lend((plaintext) => {
        lent.push(plaintext);
        throw failure;
      }),
      (error: unknown) => error === failure,
    );
    assert.equal(lent.length, 1);
    assert.ok(lent[0] !== undefined && isZeroed(lent[0]));
  });

  test('VLT-5: a borrower that rejects later gets its error back, and the Buffer is zeroed', async () => {
    const lent: Buffer[] = [];
    const failure = new Error('the upstream call timed out');
    await assert.rejects(
      lend(async (plaintext) => {
        lent.push(plaintext);
        await Promise.resolve();
        assert.ok(!isZeroed(plaintext));
        throw failure;
      }),
      (error: unknown) => error === failure,
    );
    assert.equal(lent.length, 1);
    assert.ok(lent[0] !== undefined && isZeroed(lent[0]));
    assert.equal(await lentValue(address), value, 'zeroing the lent copy leaves the stored value alone');
  });
});

describe('lending in one statement (the model gateway’s read)', () => {
  test('VLT-5: lendCredentialAlone lends the value zeroed afterwards, binding its tenant for that statement only', async () => {
    const tenantId = await createTenant(db);
    const address = { tenantId, agentId: await createAgent(tenantId), name: 'anthropic_api_key' };
    const value = `sk-ant-${randomBytes(12).toString('hex')}`;
    await put(address, value);
    const lent: Buffer[] = [];
    const seen = await lendCredentialAlone(db.app, provider, address, (plaintext) => {
      lent.push(plaintext);
      return plaintext.toString('utf8');
    });
    assert.equal(seen, value);
    assert.ok(lent[0] !== undefined && isZeroed(lent[0]));
    // The binding lasted for that statement: the next statement on the pool sees no tenant.
    const [bound] = await db.app<
      { tenant: string | null }[]
    >`select enclave.current_tenant_id()::text as tenant`;
    assert.equal(bound?.tenant ?? null, null);
  });

  test('TEN-1: enclave.credential_sealed shows only its own tenant’s rows, and will not rebind a transaction bound to another tenant', async () => {
    const [mine, theirs] = [await createTenant(db), await createTenant(db)];
    const theirAgent = await createAgent(theirs);
    await put(
      { tenantId: theirs, agentId: theirAgent, name: 'openai_api_key' },
      'sk-theirs-0123456789abcdef',
    );
    // Their agent under my tenant id: no row, so not_found, and nothing decrypted.
    await assert.rejects(
      lendCredentialAlone(
        db.app,
        provider,
        { tenantId: mine, agentId: theirAgent, name: 'openai_api_key' },
        () => 1,
      ),
      (error: unknown) => error instanceof VaultError && error.code === 'not_found',
    );
    await assert.rejects(
      withTenant(
        db.app,
        mine,
        (tx) =>
          tx`select * from enclave.credential_sealed(${theirs}::uuid, ${theirAgent}::uuid, 'openai_api_key')`,
      ),
      /bound to another tenant/,
    );
  });
});

describe('where plaintext can come from', () => {
  const SRC = path.join(import.meta.dirname, '..');
  const VAULT = path.join(SRC, 'vault');
  const ENVELOPE = path.join(VAULT, 'envelope.ts');
  const CREDENTIALS = path.join(VAULT, 'credentials.ts');
  const DATA_KEY_SEAL = path.join(VAULT, 'data-key-seal.ts');

  interface ImportStatement {
    readonly file: string;
    /** The imported file, for a relative specifier. */
    readonly target: string | undefined;
    /** Names taken from it; `*` for a namespace, `export *` or dynamic import. */
    readonly names: readonly string[];
  }

  // An import clause: `x`, `* as x`, `{ a, b as c }`, `x, { a }`, `x, * as y`.
  const CLAUSE = String.raw`(?:\*(?:\s*as\s+[\w$]+)?|\{[^}]*\}|[\w$]+(?:\s*,\s*(?:\{[^}]*\}|\*\s*as\s+[\w$]+))?)`;
  const STATIC_IMPORT = new RegExp(
    String.raw`^\s*(?:import|export)\s+(?:type\s+)?(${CLAUSE})\s*from\s*['"]([^'"]+)['"]`,
    'gm',
  );
  const BARE_OR_DYNAMIC_IMPORT = /(?:^\s*import\s*|\bimport\s*\(\s*|\brequire\s*\(\s*)['"]([^'"]+)['"]/gm;

  function namesOf(clause: string): string[] {
    const names: string[] = [];
    if (clause.includes('*')) names.push('*');
    const named = /\{([^}]*)\}/.exec(clause)?.[1];
    if (named !== undefined) {
      for (const part of named.split(',')) {
        const name = part
          .trim()
          .replace(/^type\s+/, '')
          .split(/\s+as\s+/)[0];
        if (name !== undefined && name !== '') names.push(name);
      }
    }
    if (/^[\w$]+/.test(clause)) names.push('default');
    return names;
  }

  function resolved(file: string, specifier: string): string | undefined {
    return specifier.startsWith('.') ? path.resolve(path.dirname(file), specifier) : undefined;
  }

  async function sourceFiles(): Promise<{ file: string; text: string }[]> {
    const entries = await readdir(SRC, { recursive: true });
    const files = entries
      .filter((entry) => entry.endsWith('.ts') && !entry.endsWith('.test.ts'))
      .map((entry) => path.join(SRC, entry))
      .sort();
    return Promise.all(files.map(async (file) => ({ file, text: await readFile(file, 'utf8') })));
  }

  async function importStatements(): Promise<ImportStatement[]> {
    const statements: ImportStatement[] = [];
    for (const { file, text } of await sourceFiles()) {
      for (const match of text.matchAll(STATIC_IMPORT)) {
        statements.push({ file, target: resolved(file, match[2] ?? ''), names: namesOf(match[1] ?? '') });
      }
      for (const match of text.matchAll(BARE_OR_DYNAMIC_IMPORT)) {
        statements.push({ file, target: resolved(file, match[1] ?? ''), names: ['*'] });
      }
    }
    return statements;
  }

  const inVault = (file: string) => file.startsWith(`${VAULT}${path.sep}`);
  const relative = (file: string) => path.relative(SRC, file);

  test('VLT-5: only src/vault/envelope.ts calls createDecipheriv, besides the backup file container (whose rows keep credentials sealed)', async () => {
    const callers = (await sourceFiles()).filter(({ text }) => text.includes('createDecipheriv'));
    // OPS-4: an encrypted backup file is opened with its passphrase; the credentials inside stay
    // sealed under the tenant data keys, which only the vault opens.
    assert.deepEqual(
      callers.map(({ file }) => relative(file)),
      [path.join('backup', 'container.ts'), relative(ENVELOPE)],
    );
  });

  test('VLT-5: envelope.ts (and its open) and lendCredential are imported only inside src/vault', async () => {
    const statements = await importStatements();
    // The scan sees the imports it is about, so an empty result below means something.
    assert.ok(
      statements.some((s) => s.file === DATA_KEY_SEAL && s.target === ENVELOPE && s.names.includes('open')),
      'data-key-seal.ts imports open from envelope.ts',
    );
    assert.ok(
      statements.some((s) => s.target === CREDENTIALS && s.names.includes('lendCredential')),
      'some vault module imports lendCredential',
    );

    const envelopeOutside = statements.filter((s) => s.target === ENVELOPE && !inVault(s.file));
    assert.deepEqual(
      envelopeOutside.map((s) => relative(s.file)),
      [],
    );
    const lendOutside = statements.filter(
      (s) =>
        !inVault(s.file) &&
        (s.names.includes('lendCredential') || (s.target === CREDENTIALS && s.names.includes('*'))),
    );
    assert.deepEqual(
      lendOutside.map((s) => relative(s.file)),
      [],
    );
  });
});

describe("a write beside its caller's checks", () => {
  test("when the caller's checks fail, nothing is written — not the credential, not a first data key — and their error is thrown, not the value's", async () => {
    const tenantId = await createTenant(db);
    const address = { tenantId, agentId: await createAgent(tenantId), name: 'api_key' };
    const refused = new Error('the caller refuses');
    const checks = [
      (_tx: TenantSql) => Promise.reject(refused),
      // A check that is still running statements after the lock and the key read were sent.
      async (tx: TenantSql) => {
        await tx`select pg_sleep(0.05)`;
        throw refused;
      },
    ];
    for (const check of checks) {
      await assert.rejects(
        withTenant(db.app, tenantId, (tx) =>
          putCredential(tx, provider, address, '', { checked: check(tx) }),
        ),
        (error) => error === refused,
      );
    }
    const [counts] = await db.superuser<{ keys: number; credentials: number }[]>`
      select (select count(*)::int from enclave.vault_data_keys where tenant_id = ${tenantId}) as keys,
             (select count(*)::int from enclave.credentials where tenant_id = ${tenantId}) as credentials`;
    assert.deepEqual(counts, { keys: 0, credentials: 0 });
    // Checks that pass: the value is judged after them, then stored.
    await assert.rejects(
      withTenant(db.app, tenantId, (tx) =>
        putCredential(tx, provider, address, '', { checked: Promise.resolve() }),
      ),
      (error) => error instanceof VaultError && error.code === 'validation_failed',
    );
    await withTenant(db.app, tenantId, (tx) =>
      putCredential(tx, provider, address, 'a value', { checked: Promise.resolve() }),
    );
    assert.equal(await lentValue(address), 'a value');
  });

  test('a write and the audit event its statement appends are stored together or not at all', async () => {
    const tenantId = await createTenant(db);
    const address = { tenantId, agentId: await createAgent(tenantId), name: 'api_key' };
    // Parts the database refuses (not cut around seq and ts): the upsert goes with them.
    await assert.rejects(
      withTenant(db.app, tenantId, (tx) =>
        putCredential(tx, provider, address, 'first value', {
          record: () => tx`enclave.audit_append_event('{', '', '')`,
        }),
      ),
      (error: { code?: string }) => error.code === '22023',
    );
    assert.equal((await listed(tenantId, address.agentId)).length, 0);
    const record = (tx: TenantSql) => (created: PendingQuery<Row[]>) =>
      appendEitherAuditEvent(
        tx,
        tenantId,
        created,
        { actor: 'system', action: 'test.added', target: null, data: {} },
        { actor: 'system', action: 'test.rotated', target: null, data: {} },
      );
    for (const value of ['first value', 'second value']) {
      await withTenant(db.app, tenantId, (tx) =>
        putCredential(tx, provider, address, value, { record: record(tx) }),
      );
    }
    const events = await db.superuser<{ seq: string; action: string }[]>`
      select seq::text, action from enclave.audit_events where tenant_id = ${tenantId} order by seq`;
    assert.deepEqual(
      [...events],
      [
        { seq: '1', action: 'test.added' },
        { seq: '2', action: 'test.rotated' },
      ],
    );
    assert.equal(await lentValue(address), 'second value');
  });
});

describe('credential values', () => {
  let tenantId: string;
  let agentId: string;
  before(async () => {
    tenantId = await createTenant(db);
    agentId = await createAgent(tenantId);
  });

  async function assertRefused(name: string, value: string, secret?: string): Promise<void> {
    await assert.rejects(put({ tenantId, agentId, name }, value), (error: unknown) => {
      assert.ok(error instanceof VaultError, String(error));
      assert.equal(error.code, 'validation_failed');
      assert.equal(error.field, 'value');
      if (secret !== undefined) assert.ok(!error.message.includes(secret), 'the message holds the value');
      return true;
    });
    assert.ok(
      !(await listed(tenantId, agentId)).some((listing) => listing.name === name),
      'nothing was stored',
    );
  }

  test('VLT-2: an empty value is refused on the field value', async () => {
    await assertRefused('empty_value', '');
  });

  test('VLT-2: a value over 65 535 bytes is refused on the field value, and the message does not contain it', async () => {
    const marker = `sk-${randomBytes(8).toString('hex')}`;
    const tooLong = marker.padEnd(65_536, 'x');
    assert.equal(Buffer.byteLength(tooLong), 65_536);
    await assertRefused('too_long', tooLong, marker);
    // Bytes, not characters: 21 845 three-byte characters fit, one more byte does not.
    const euros = '€'.repeat(21_845);
    await assertRefused('too_long_multibyte', `${marker}${euros}`, marker);
  });

  test('VLT-1: a value of exactly 65 535 bytes is stored and lent back whole', async () => {
    const largest = `sk-${randomBytes(8).toString('hex')}`.padEnd(65_535, 'y');
    await put({ tenantId, agentId, name: 'largest' }, largest);
    assert.equal(await lentValue({ tenantId, agentId, name: 'largest' }), largest);
    const euros = '€'.repeat(21_845);
    assert.equal(Buffer.byteLength(euros), 65_535);
    await put({ tenantId, agentId, name: 'largest_multibyte' }, euros);
    assert.equal(await lentValue({ tenantId, agentId, name: 'largest_multibyte' }), euros);
  });

  test('VLT-2: a value of 16 characters or more shows its last 4 characters; a shorter one shows none', async () => {
    const cases: [string, string, string | null][] = [
      ['long_token', `xoxb-${randomBytes(16).toString('hex')}WXYZ`, 'WXYZ'],
      ['sixteen_chars', 'abcdefghijkl1234', '1234'],
      ['fifteen_chars', 'abcdefghijk1234', null],
      ['short_pin', '4711', null],
      ['emoji_tail', 'abcdefghijkl🔑🗝🔐🔒', '🔑🗝🔐🔒'],
    ];
    for (const [name, value, last4] of cases) {
      const { listing } = await put({ tenantId, agentId, name }, value);
      assert.equal(listing.last4, last4, name);
    }
    const listings = new Map(
      (await listed(tenantId, agentId)).map((listing) => [listing.name, listing.last4]),
    );
    for (const [name, , last4] of cases) assert.equal(listings.get(name), last4, name);
  });
});
