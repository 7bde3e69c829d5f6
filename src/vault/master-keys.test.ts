import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError } from '../config.ts';
import { dataKeyAad } from './envelope.ts';
import { VaultError } from './errors.ts';
import {
  envMasterKeyProvider,
  fileMasterKeyProvider,
  loadMasterKeyProvider,
  parseMasterKeys,
} from './master-keys.ts';

// The master keys (KEKs) that wrap every tenant's data key: parsed from
// operator-supplied text without ever echoing it, generated for development,
// required in production, and versioned so they rotate.

const SOURCE = 'TEST_MASTER_KEYS';

function newKey(): { key: Buffer; base64: string } {
  const key = randomBytes(32);
  return { key, base64: key.toString('base64') };
}

/** Asserts a master_key_invalid error that names `source` (and `entry` when given) and contains none of `secrets`. */
function assertInvalid(fn: () => unknown, secrets: readonly string[], entry?: number): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof VaultError, String(error));
    assert.equal(error.code, 'master_key_invalid');
    assert.ok(error.message.startsWith(`${SOURCE}:`), error.message);
    if (entry !== undefined) assert.match(error.message, new RegExp(`\\bentry ${entry}\\b`));
    for (const secret of secrets) assert.ok(!error.message.includes(secret), 'the message holds key text');
    return true;
  });
}

async function fileMode(file: string): Promise<number> {
  return (await stat(file)).mode & 0o777;
}

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'enclave-master-keys-'));
});
after(() => rm(dir, { recursive: true, force: true }));

describe('parseMasterKeys', () => {
  test('VLT-1: reads `<version>:<base64>` entries separated by newlines and commas, skipping blanks and comments', () => {
    const [one, two, three] = [newKey(), newKey(), newKey()];
    const text = `# master keys\n\n  1:${one.base64}\n# retired soon\n2:${two.base64}, 7:${three.base64}\n`;
    const keys = parseMasterKeys(text, SOURCE);
    assert.deepEqual([...keys.keys()], [1, 2, 7]);
    assert.deepEqual(keys.get(1), one.key);
    assert.deepEqual(keys.get(2), two.key);
    assert.deepEqual(keys.get(7), three.key);
  });

  test('VLT-1: a single bare base64 key (`openssl rand -base64 32`) is version 1', () => {
    const { key, base64 } = newKey();
    assert.deepEqual(parseMasterKeys(`${base64}\n`, SOURCE), new Map([[1, key]]));
    assert.deepEqual(parseMasterKeys(`# generated\n${base64}`, SOURCE), new Map([[1, key]]));
  });

  test('VLT-1: a key of the wrong length is refused by source and entry, without the key text', () => {
    const good = newKey();
    const short = randomBytes(16).toString('base64');
    const long = randomBytes(48).toString('base64');
    assertInvalid(() => parseMasterKeys(`1:${good.base64}\n2:${short}`, SOURCE), [good.base64, short], 2);
    assertInvalid(() => parseMasterKeys(`1:${long}`, SOURCE), [long], 1);
    assertInvalid(() => parseMasterKeys(short, SOURCE), [short], 1);
  });

  test('VLT-1: text that is not base64 is refused by source and entry, without the text', () => {
    const good = newKey();
    const bad = `${good.base64.slice(0, 20)}!$${good.base64.slice(22)}`;
    assertInvalid(() => parseMasterKeys(`1:${good.base64},2:${bad}`, SOURCE), [good.base64, bad], 2);
    assertInvalid(() => parseMasterKeys(`one:${good.base64}`, SOURCE), [good.base64], 1);
  });

  test('VLT-1: version 0 is refused by source and entry, without the key text', () => {
    const good = newKey();
    assertInvalid(() => parseMasterKeys(`0:${good.base64}`, SOURCE), [good.base64], 1);
  });

  test('VLT-1: a version given twice is refused by source and entry, without the key text', () => {
    const [one, two, three] = [newKey(), newKey(), newKey()];
    assertInvalid(
      () => parseMasterKeys(`1:${one.base64}\n2:${two.base64}\n1:${three.base64}`, SOURCE),
      [one.base64, two.base64, three.base64],
      3,
    );
  });

  test('VLT-1: text with no key at all is refused, naming the source', () => {
    for (const text of ['', '  \n', '# only a comment\n', ',,'])
      assertInvalid(() => parseMasterKeys(text, SOURCE), []);
  });
});

describe('loadMasterKeyProvider', () => {
  test('VLT-1: in development with no key configured, a key file is generated with mode 0600 and reused on the next start', async () => {
    const dataDir = await mkdtemp(path.join(dir, 'data-'));
    const first = await loadMasterKeyProvider({ env: 'development', dataDir }, {});
    const file = path.join(dataDir, 'secrets', 'master-keys');
    assert.equal(await fileMode(file), 0o600);
    assert.deepEqual(await first.versions(), [1]);
    const contents = await readFile(file, 'utf8');

    const second = await loadMasterKeyProvider({ env: 'development', dataDir }, {});
    assert.equal(await readFile(file, 'utf8'), contents, 'the second start does not replace the key');
    const dataKey = randomBytes(32);
    const aad = dataKeyAad('00000000-0000-0000-0000-000000000001', 1);
    const wrapped = await first.wrap(1, dataKey, aad);
    assert.deepEqual(await second.unwrap(1, wrapped, aad), dataKey);
  });

  test('VLT-1: in production with no key configured, start-up stops naming ENCLAVE_MASTER_KEY', async () => {
    const dataDir = await mkdtemp(path.join(dir, 'prod-'));
    await assert.rejects(loadMasterKeyProvider({ env: 'production', dataDir }, {}), (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.equal(error.variable, 'ENCLAVE_MASTER_KEY');
      assert.match(error.message, /ENCLAVE_MASTER_KEY/);
      return true;
    });
    await assert.rejects(
      stat(path.join(dataDir, 'secrets')),
      { code: 'ENOENT' },
      'no key is generated in production',
    );
  });

  test('VLT-1: ENCLAVE_MASTER_KEY and ENCLAVE_MASTER_KEY_FILE together are refused', async () => {
    const { base64 } = newKey();
    const file = path.join(dir, 'both-keys');
    await writeFile(file, `1:${base64}\n`, { mode: 0o600 });
    for (const env of ['development', 'production'] as const) {
      await assert.rejects(
        loadMasterKeyProvider(
          { env, dataDir: dir },
          { ENCLAVE_MASTER_KEY: `1:${base64}`, ENCLAVE_MASTER_KEY_FILE: file },
        ),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError, String(error));
          assert.match(error.message, /ENCLAVE_MASTER_KEY_FILE/);
          assert.ok(!error.message.includes(base64));
          return true;
        },
      );
    }
  });

  test('VLT-1: ENCLAVE_MASTER_KEY and ENCLAVE_MASTER_KEY_FILE each load in production', async () => {
    const { key, base64 } = newKey();
    const file = path.join(dir, 'production-keys');
    await writeFile(file, `1:${base64}\n`, { mode: 0o600 });
    const fromEnv = await loadMasterKeyProvider(
      { env: 'production', dataDir: dir },
      { ENCLAVE_MASTER_KEY: base64 },
    );
    const fromFile = await loadMasterKeyProvider(
      { env: 'production', dataDir: dir },
      { ENCLAVE_MASTER_KEY_FILE: file },
    );
    const aad = dataKeyAad('00000000-0000-0000-0000-000000000002', 3);
    assert.deepEqual(await fromFile.unwrap(1, await fromEnv.wrap(1, key, aad), aad), key);
    assert.equal(fromEnv.source, 'ENCLAVE_MASTER_KEY');
    assert.equal(fromFile.source, 'ENCLAVE_MASTER_KEY_FILE');
  });

  test('VLT-1: a malformed ENCLAVE_MASTER_KEY_FILE stops start-up naming the variable, without its contents', async () => {
    const short = randomBytes(24).toString('base64');
    const file = path.join(dir, 'malformed-keys');
    await writeFile(file, `1:${short}\n`, { mode: 0o600 });
    await assert.rejects(
      loadMasterKeyProvider({ env: 'production', dataDir: dir }, { ENCLAVE_MASTER_KEY_FILE: file }),
      (error: unknown) => {
        assert.ok(error instanceof VaultError, String(error));
        assert.equal(error.code, 'master_key_invalid');
        assert.match(error.message, /^ENCLAVE_MASTER_KEY_FILE: entry 1 /);
        assert.ok(!error.message.includes(short));
        return true;
      },
    );
  });

  test('VLT-1: a malformed ENCLAVE_MASTER_KEY stops start-up naming the variable, without its contents', async () => {
    const short = randomBytes(24).toString('base64');
    await assert.rejects(
      loadMasterKeyProvider({ env: 'production', dataDir: dir }, { ENCLAVE_MASTER_KEY: `1:${short}` }),
      (error: unknown) => {
        assert.ok(error instanceof VaultError, String(error));
        assert.equal(error.code, 'master_key_invalid');
        assert.match(error.message, /^ENCLAVE_MASTER_KEY: entry 1 /);
        assert.ok(!error.message.includes(short));
        return true;
      },
    );
  });

  test('VLT-1: a missing ENCLAVE_MASTER_KEY_FILE stops start-up naming the variable, the path and the reason', async () => {
    const file = path.join(dir, 'no-such-key-file');
    await assert.rejects(
      loadMasterKeyProvider({ env: 'production', dataDir: dir }, { ENCLAVE_MASTER_KEY_FILE: file }),
      (error: unknown) => {
        assert.ok(error instanceof VaultError, String(error));
        assert.equal(error.code, 'master_key_invalid');
        assert.equal(error.message, `ENCLAVE_MASTER_KEY_FILE: cannot read ${file} (ENOENT)`);
        return true;
      },
    );
  });
});

describe('versions of a master key', () => {
  test('VLT-6: a key file gains version n + 1, stays mode 0600, and still unwraps what older versions wrapped', async () => {
    const { base64 } = newKey();
    const file = path.join(dir, 'rotating-keys');
    await writeFile(file, `1:${base64}\n`, { mode: 0o600 });
    const provider = fileMasterKeyProvider(file, SOURCE);
    const dataKey = randomBytes(32);
    const aad = dataKeyAad('00000000-0000-0000-0000-000000000003', 1);
    const underOne = await provider.wrap(1, dataKey, aad);

    assert.equal(await provider.addVersion(), 2);
    assert.deepEqual(await provider.versions(), [1, 2]);
    assert.equal(await fileMode(file), 0o600);
    const onDisk = parseMasterKeys(await readFile(file, 'utf8'), SOURCE);
    assert.deepEqual([...onDisk.keys()], [1, 2]);
    assert.notDeepEqual(onDisk.get(2), onDisk.get(1));
    assert.deepEqual(await provider.unwrap(1, underOne, aad), dataKey);
    const underTwo = await provider.wrap(2, dataKey, aad);
    assert.deepEqual(await provider.unwrap(2, underTwo, aad), dataKey);
    await assert.rejects(provider.unwrap(1, underTwo, aad), { code: 'ciphertext_rejected' });

    await provider.removeVersion(1);
    assert.deepEqual(await provider.versions(), [2]);
    assert.deepEqual([...parseMasterKeys(await readFile(file, 'utf8'), SOURCE).keys()], [2]);
    assert.equal(await fileMode(file), 0o600);
    await assert.rejects(provider.unwrap(1, underOne, aad), { code: 'master_key_unavailable' });
    assert.deepEqual(await provider.unwrap(2, underTwo, aad), dataKey);
  });

  test('VLT-6: a second provider on the same file reads it again when asked for a version it does not hold', async () => {
    const { base64 } = newKey();
    const file = path.join(dir, 'shared-keys');
    await writeFile(file, `1:${base64}\n`, { mode: 0o600 });
    const rotator = fileMasterKeyProvider(file, SOURCE);
    const server = fileMasterKeyProvider(file, SOURCE);
    const dataKey = randomBytes(32);
    const aad = dataKeyAad('00000000-0000-0000-0000-000000000004', 1);
    // The server has read the file (version 1 only) before the rotation adds a version.
    assert.deepEqual(await server.unwrap(1, await rotator.wrap(1, dataKey, aad), aad), dataKey);

    const added = await rotator.addVersion();
    assert.deepEqual(await server.unwrap(added, await rotator.wrap(added, dataKey, aad), aad), dataKey);
    await assert.rejects(server.wrap(added + 1, dataKey, aad), (error: unknown) => {
      assert.ok(error instanceof VaultError);
      assert.equal(error.code, 'master_key_unavailable');
      assert.match(error.message, new RegExp(`version ${added + 1} is not in ${SOURCE}`));
      return true;
    });
  });

  test('VLT-6: ENCLAVE_MASTER_KEY cannot be rotated by Enclave: adding or removing a version is refused', async () => {
    const { base64 } = newKey();
    const provider = envMasterKeyProvider(`1:${base64}`);
    await assert.rejects(provider.addVersion(), (error: unknown) => {
      assert.ok(error instanceof VaultError);
      assert.equal(error.code, 'master_key_read_only');
      assert.match(error.message, /^ENCLAVE_MASTER_KEY /);
      assert.ok(!error.message.includes(base64));
      return true;
    });
    await assert.rejects(provider.removeVersion(1), { code: 'master_key_read_only' });
    assert.deepEqual(await provider.versions(), [1]);
  });
});
