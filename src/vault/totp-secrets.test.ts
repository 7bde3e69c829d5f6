import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { testVault } from '../../test/helpers/app.ts';
import { createTenant } from '../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { withTenant } from '../db/tenant.ts';
import type { StoredUnderDataKey } from './data-key-seal.ts';
import { unwrapDataKey } from './data-keys.ts';
import { credentialAad, open, type TotpSecretAddress, totpSecretAad } from './envelope.ts';
import { VaultError } from './errors.ts';
import { envMasterKeyProvider } from './master-keys.ts';
import type { Vault } from './service.ts';

// The attack: someone who can write the database (or a bug) moves sealed
// bytes between the TOTP table and the credential table, hoping one kind's
// opening path decrypts the other's. The TOTP secret's associated data names
// its own purpose, so neither opens as the other; and a tenant key rotation
// re-seals TOTP secrets with the credentials, so none is left under a
// deleted key.

let db: TestDatabase;
let vault: Vault;
let tenantId: string;
let userId: string;
let agentId: string;

before(async () => {
  db = await createTestDatabase();
  vault = await testVault(db);
  tenantId = await createTenant(db, 'totp vault tenant');
  userId = randomUUID();
  await db.superuser`
    insert into users (id, tenant_id, username, email, password_hash, role)
    values (${userId}::uuid, ${tenantId}::uuid, ${`u${randomBytes(4).toString('hex')}`},
            ${`${randomBytes(4).toString('hex')}@example.test`}, 'x', 'owner')`;
  const [agent] = await withTenant(
    db.app,
    tenantId,
    (tx) => tx<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      values (${tenantId}::uuid, ${`agent-${randomBytes(4).toString('hex')}`}, 'Purpose test agent', 'echo')
      returning id`,
  );
  agentId = agent?.id ?? '';
});
after(() => db.drop());

/** Seals a fresh secret and stores it as a pending enrolment row, as src/factors does. */
async function storedSecret(): Promise<{ address: TotpSecretAddress; secret: Buffer }> {
  const address = { tenantId, userId, factorId: randomUUID() };
  const secret = randomBytes(20);
  await withTenant(db.app, tenantId, async (tx) => {
    await tx`delete from totp_secrets where user_id = ${userId}::uuid and factor_id is null`;
    const sealed = await vault.sealTotpSecret(tx, address, Buffer.from(secret));
    await tx`
      insert into totp_secrets (id, tenant_id, user_id, key_version, ciphertext, nonce, tag, expires_at)
      values (${address.factorId}::uuid, ${tenantId}::uuid, ${userId}::uuid, ${sealed.key_version},
              ${sealed.ciphertext}, ${sealed.nonce}, ${sealed.tag}, now() + interval '5 minutes')`;
  });
  return { address, secret };
}

async function storedRow(id: string): Promise<StoredUnderDataKey> {
  const [row] = await db.superuser<StoredUnderDataKey[]>`
    select t.key_version, t.ciphertext, t.nonce, t.tag, k.master_version, k.wrapped
    from totp_secrets t join vault_data_keys k on k.tenant_id = t.tenant_id and k.version = t.key_version
    where t.id = ${id}::uuid`;
  assert.ok(row !== undefined, 'the row is stored');
  return row;
}

/** The tenant's data key that sealed `row`, under the master key testVault derives for this database. */
async function dataKeyOf(row: StoredUnderDataKey): Promise<Buffer> {
  const key = createHash('sha256').update(`enclave test master key ${db.name}`).digest('base64');
  return unwrapDataKey(envMasterKeyProvider(`1:${key}`, 'the test master key'), tenantId, {
    version: row.key_version,
    master_version: row.master_version,
    wrapped: row.wrapped,
  });
}

describe('TOTP secrets apart from credentials', () => {
  test('ACC-8: a sealed TOTP secret opens under its own purpose and is lent back whole', async () => {
    const { address, secret } = await storedSecret();
    const lent = await vault.lendTotpSecret(address, await storedRow(address.factorId), (plain) =>
      Buffer.from(plain),
    );
    assert.ok(lent.equals(secret));
  });

  test('ACC-8: a sealed TOTP secret does not open under the credential purpose', async () => {
    const { address } = await storedSecret();
    const row = await storedRow(address.factorId);
    const key = await dataKeyOf(row);
    // Same key and bytes; only the purpose differs. The ids are placed every way a credential address could hold them.
    const candidates = [
      credentialAad({ tenantId, agentId: userId, name: address.factorId }, row.key_version),
      credentialAad({ tenantId, agentId: address.factorId, name: userId }, row.key_version),
      credentialAad({ tenantId, agentId, name: 'totp_secret' }, row.key_version),
    ];
    for (const aad of candidates) {
      assert.throws(
        () => open(key, row, aad),
        (error: unknown) => error instanceof VaultError && error.code === 'ciphertext_rejected',
      );
    }
    // The control: the very same call with the TOTP purpose opens it.
    assert.equal(open(key, row, totpSecretAad(address, row.key_version)).length, 20);
    key.fill(0);
  });

  test('ACC-8: a customer credential copied into a TOTP secret row does not open as a TOTP secret', async () => {
    const { address } = await storedSecret();
    const value = randomBytes(20).toString('base64url').slice(0, 20);
    await withTenant(db.app, tenantId, (tx) =>
      vault.putCredential(tx, { tenantId, agentId, name: 'copied_value' }, value),
    );
    // The attacker writes the credential's sealed bytes over the TOTP row (20 bytes of ciphertext fit its check).
    await db.superuser`
      update totp_secrets t set ciphertext = c.ciphertext, nonce = c.nonce, tag = c.tag, key_version = c.key_version
      from credentials c where c.agent_id = ${agentId}::uuid and c.name = 'copied_value' and t.id = ${address.factorId}::uuid`;
    await assert.rejects(
      vault.lendTotpSecret(address, await storedRow(address.factorId), () => 'opened'),
      (error: unknown) => error instanceof VaultError && error.code === 'ciphertext_rejected',
    );
  });

  test('ACC-8: a TOTP secret moved to another user does not open', async () => {
    const { address } = await storedSecret();
    const elsewhere = { ...address, userId: randomUUID() };
    await assert.rejects(
      vault.lendTotpSecret(elsewhere, await storedRow(address.factorId), () => 'opened'),
      (error: unknown) => error instanceof VaultError && error.code === 'ciphertext_rejected',
    );
  });

  test('VLT-6: a tenant key rotation re-seals TOTP secrets under the new key before deleting the old one', async () => {
    const { address, secret } = await storedSecret();
    const before = await storedRow(address.factorId);
    const rotation = await vault.rotateTenantKey(db.app, tenantId, 'operator:cli');
    assert.ok(rotation.totpSecrets >= 1, 'the TOTP secret was counted');
    const after = await storedRow(address.factorId);
    assert.equal(after.key_version, rotation.to);
    assert.notEqual(after.key_version, before.key_version);
    const lent = await vault.lendTotpSecret(address, after, (plain) => Buffer.from(plain));
    assert.ok(lent.equals(secret));
  });
});
