import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Config, ConfigError, type Env } from '../config.ts';
import { KEY_BYTES, unwrapKey, wrapKey } from './envelope.ts';
import { VaultError } from './errors.ts';

// Master keys (key-encryption keys), versioned, held by a provider. The rest
// of the vault only asks a provider to wrap or unwrap a 32-byte data key
// under a version, so a KMS-backed provider (which never reveals its key)
// fits the same interface. Two providers exist: a key file (generated under
// the data dir in development, or ENCLAVE_MASTER_KEY_FILE) and the
// ENCLAVE_MASTER_KEY variable.
//
// Key text: entries `<version>:<base64 32-byte key>`, separated by newlines
// or commas; blank lines and `#` comments are ignored. A single bare base64
// key counts as version 1 (so `openssl rand -base64 32` is a valid value).
// Nothing here ever puts key material into an error message.

export interface MasterKeyProvider {
  /** Where the keys come from, for messages: never key material. */
  readonly source: string;
  /** Versions the provider holds now (a file is read again). */
  versions(): Promise<readonly number[]>;
  wrap(version: number, key: Buffer, aad: Buffer): Promise<Buffer>;
  /** The unwrapped key, in a Buffer the caller zeroes. */
  unwrap(version: number, wrapped: Buffer, aad: Buffer): Promise<Buffer>;
  /** Adds a version newer than every held one and returns it (rotation). */
  addVersion(): Promise<number>;
  /** Forgets a retired version. */
  removeVersion(version: number): Promise<void>;
}

const MAX_VERSION = 1_000_000;
const ENTRY = /^(\d{1,7}):([A-Za-z0-9+/_-]{43}=?)$/;
const BARE_KEY = /^[A-Za-z0-9+/_-]{43}=?$/;

/** Parses key text into version → key. `source` names the origin in errors. */
export function parseMasterKeys(text: string, source: string): Map<number, Buffer> {
  const keys = new Map<number, Buffer>();
  const entries = text
    .split(/[\n,]/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  if (entries.length === 1 && BARE_KEY.test(entries[0] ?? '')) entries[0] = `1:${entries[0]}`;
  entries.forEach((entry, index) => {
    const match = ENTRY.exec(entry);
    const version = Number(match?.[1]);
    const key = match?.[2] === undefined ? undefined : Buffer.from(match[2], 'base64');
    if (match === null || key === undefined || key.length !== KEY_BYTES) {
      throw new VaultError(
        'master_key_invalid',
        `${source}: entry ${index + 1} is not "<version>:<base64 of a 32-byte key>"`,
      );
    }
    if (version < 1 || version > MAX_VERSION) {
      throw new VaultError(
        'master_key_invalid',
        `${source}: entry ${index + 1}: version must be 1 to ${MAX_VERSION}`,
      );
    }
    if (keys.has(version)) {
      throw new VaultError(
        'master_key_invalid',
        `${source}: entry ${index + 1}: version ${version} appears twice`,
      );
    }
    keys.set(version, key);
  });
  if (keys.size === 0) throw new VaultError('master_key_invalid', `${source}: holds no key`);
  return keys;
}

function formatMasterKeys(keys: ReadonlyMap<number, Buffer>): string {
  const lines = [...keys.entries()]
    .sort(([a], [b]) => a - b)
    .map(([version, key]) => `${version}:${key.toString('base64')}`);
  return `# Enclave master keys: <version>:<base64 key>. Keep this file secret and backed up.\n${lines.join('\n')}\n`;
}

function keyFor(keys: ReadonlyMap<number, Buffer>, version: number, source: string): Buffer {
  const key = keys.get(version);
  if (key === undefined) {
    throw new VaultError('master_key_unavailable', `master key version ${version} is not in ${source}`);
  }
  return key;
}

/** ENCLAVE_MASTER_KEY: fixed for the life of the process; rotation means adding a version and restarting. */
export function envMasterKeyProvider(text: string, source = 'ENCLAVE_MASTER_KEY'): MasterKeyProvider {
  const keys = parseMasterKeys(text, source);
  const readOnly = (): never => {
    throw new VaultError(
      'master_key_read_only',
      `${source} cannot be changed by Enclave: add a new "<version>:<key>" entry to it on every server and the CLI, then run the rotation again`,
    );
  };
  return {
    source,
    versions: async () => [...keys.keys()].sort((a, b) => a - b),
    wrap: async (version, key, aad) => wrapKey(keyFor(keys, version, source), key, aad),
    unwrap: async (version, wrapped, aad) => unwrapKey(keyFor(keys, version, source), wrapped, aad),
    addVersion: async () => readOnly(),
    removeVersion: async () => readOnly(),
  };
}

async function readKeyFile(file: string, source: string): Promise<Map<number, Buffer>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new VaultError('master_key_invalid', `${source}: cannot read ${file} (${reason})`);
  }
  return parseMasterKeys(text, source);
}

async function writeKeyFile(file: string, keys: ReadonlyMap<number, Buffer>): Promise<void> {
  // Written beside the file and renamed over it: a crash leaves the old or the new file, never half of one.
  const temporary = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(temporary, formatMasterKeys(keys), { mode: 0o600, flag: 'wx' });
  await chmod(temporary, 0o600);
  await rename(temporary, file);
}

/**
 * A key file. Read at first use and again whenever a version is asked for
 * that it does not hold, so a server picks up a version a rotation added
 * while it runs.
 */
export function fileMasterKeyProvider(file: string, source: string): MasterKeyProvider {
  let keys: Map<number, Buffer> | undefined;
  const load = async (): Promise<Map<number, Buffer>> => {
    keys = await readKeyFile(file, source);
    return keys;
  };
  const withVersion = async (version: number): Promise<Buffer> => {
    const held = keys ?? (await load());
    return held.get(version) ?? keyFor(await load(), version, source);
  };
  return {
    source,
    versions: async () => [...(await load()).keys()].sort((a, b) => a - b),
    wrap: async (version, key, aad) => wrapKey(await withVersion(version), key, aad),
    unwrap: async (version, wrapped, aad) => unwrapKey(await withVersion(version), wrapped, aad),
    async addVersion() {
      const current = await load();
      const version = Math.max(...current.keys()) + 1;
      const next = new Map(current).set(version, randomBytes(KEY_BYTES));
      await writeKeyFile(file, next);
      keys = next;
      return version;
    },
    async removeVersion(version) {
      const next = new Map(await load());
      if (!next.delete(version)) return;
      await writeKeyFile(file, next);
      keys = next;
    },
  };
}

/** The development key file under the data dir, created on first start (mode 0600). */
async function generatedKeyFile(dataDir: string): Promise<string> {
  const dir = path.join(dataDir, 'secrets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, 'master-keys');
  try {
    // 'wx' creates exclusively, so two processes starting at once agree on one key.
    await writeFile(file, formatMasterKeys(new Map([[1, randomBytes(KEY_BYTES)]])), {
      mode: 0o600,
      flag: 'wx',
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return file;
}

/** The provider the configuration names; production must name one. */
export async function loadMasterKeyProvider(
  config: Pick<Config, 'env' | 'dataDir'>,
  env: Env,
): Promise<MasterKeyProvider> {
  const direct = env.ENCLAVE_MASTER_KEY?.trim() ?? '';
  const file = env.ENCLAVE_MASTER_KEY_FILE?.trim() ?? '';
  if (direct !== '' && file !== '') {
    throw new ConfigError(
      'ENCLAVE_MASTER_KEY',
      'set either ENCLAVE_MASTER_KEY or ENCLAVE_MASTER_KEY_FILE, not both',
    );
  }
  let provider: MasterKeyProvider;
  if (file !== '') {
    provider = fileMasterKeyProvider(path.resolve(file), 'ENCLAVE_MASTER_KEY_FILE');
  } else if (direct !== '') {
    provider = envMasterKeyProvider(direct);
  } else if (config.env === 'production') {
    throw new ConfigError(
      'ENCLAVE_MASTER_KEY',
      'is required when ENCLAVE_ENV=production (or set ENCLAVE_MASTER_KEY_FILE); see README.md, "Credential vault"',
    );
  } else {
    const generated = await generatedKeyFile(config.dataDir);
    provider = fileMasterKeyProvider(generated, `the development master key file ${generated}`);
  }
  await provider.versions(); // a malformed source stops start-up here, with its name
  return provider;
}
