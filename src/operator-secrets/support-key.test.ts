import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import ssh2 from 'ssh2';
import { ConfigError } from '../config.ts';
import { generateSupportKeyPair, loadSupportKey } from './support-key.ts';

const parses = (text: string): boolean => {
  const parsed = ssh2.utils.parseKey(text);
  return !(parsed instanceof Error) && !Array.isArray(parsed) && parsed.isPrivateKey();
};

/** A key ssh2 generated and cannot read back: they come about 4 in 1,000. */
function unreadableKey(): string {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'enclave support' });
    if (!parses(pair.private)) return pair.private;
  }
}

describe('AGT-5: the support key', () => {
  test('AGT-5: every one of 3,000 generated support keys is one ssh2 reads back', () => {
    for (let i = 0; i < 3000; i++) assert.ok(parses(generateSupportKeyPair().private), `key ${i} parses`);
  });

  test('AGT-5: a development key an earlier version generated unreadable is replaced, not a start that fails forever', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-support-key-'));
    await mkdir(path.join(dataDir, 'secrets'), { mode: 0o700 });
    const file = path.join(dataDir, 'secrets', 'support_ssh_key');
    const bad = unreadableKey();
    await writeFile(file, bad, { mode: 0o600 });
    const key = await loadSupportKey({ env: 'development', dataDir }, {});
    assert.ok(parses(key.privateKey));
    assert.match(key.publicKey, /^ssh-ed25519 [A-Za-z0-9+/]+=*$/);
    assert.equal(await readFile(`${file}.unreadable`, 'utf8'), bad, 'the old key is kept beside it');
    const again = await loadSupportKey({ env: 'development', dataDir }, {});
    assert.equal(again.publicKey, key.publicKey, 'a good key is kept across starts');
  });

  test('AGT-5: a named key file ssh2 cannot read stops start-up with the variable named, and is never replaced', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'enclave-support-key-'));
    const file = path.join(dir, 'named_key');
    const bad = unreadableKey();
    await writeFile(file, bad, { mode: 0o600 });
    await assert.rejects(
      loadSupportKey({ env: 'production', dataDir: dir }, { ENCLAVE_SUPPORT_SSH_KEY_FILE: file }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.variable === 'ENCLAVE_SUPPORT_SSH_KEY_FILE' &&
        !error.message.includes('PRIVATE KEY'),
    );
    assert.equal(await readFile(file, 'utf8'), bad);
  });
});
