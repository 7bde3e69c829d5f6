import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError } from '../config.ts';
import { loadRelaySigningKey, RELAY_SIGNING_KEY_VARIABLE } from './relay-signing-key.ts';

// RLY-13: the card-signing key is an operator secret, loaded as the
// checkpoint key is: generated once (0600) in development, required in
// production, and refused unless it is an Ed25519 PEM key.

const dataDir = () => mkdtempSync(path.join(tmpdir(), 'enclave-relay-key-'));

describe('relay signing key', () => {
  test('RLY-13: in development the key is generated once into <data dir>/secrets/relay_signing_key.pem (0600) and reused', async () => {
    const dir = dataDir();
    const config = { env: 'development' as const, dataDir: dir };
    const first = await loadRelaySigningKey(config, {});
    const second = await loadRelaySigningKey(config, {});
    const file = path.join(dir, 'secrets', 'relay_signing_key.pem');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(first.asymmetricKeyType, 'ed25519');
    assert.ok(first.equals(second), 'the same key both times');
  });

  test('RLY-13: in production ENCLAVE_RELAY_SIGNING_KEY_FILE is required; a named file is used; a wrong key is refused', async () => {
    const config = { env: 'production' as const, dataDir: dataDir() };
    await assert.rejects(loadRelaySigningKey(config, {}), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /ENCLAVE_RELAY_SIGNING_KEY_FILE.*required when ENCLAVE_ENV=production/);
      return true;
    });
    const dir = dataDir();
    const good = path.join(dir, 'relay.pem');
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(good, privateKey.export({ format: 'pem', type: 'pkcs8' }));
    const loaded = await loadRelaySigningKey(config, { [RELAY_SIGNING_KEY_VARIABLE]: good });
    assert.ok(loaded.equals(privateKey));
    const rsa = path.join(dir, 'rsa.pem');
    writeFileSync(
      rsa,
      generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }),
    );
    await assert.rejects(
      loadRelaySigningKey(config, { [RELAY_SIGNING_KEY_VARIABLE]: rsa }),
      /must hold an Ed25519 key/,
    );
  });
});
