import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Config, ConfigError, type Env } from '../config.ts';

// An operator's Ed25519 signing key as a PKCS#8 PEM file: the checkpoint key
// (checkpoint-key.ts) and the relay's card-signing key (relay-signing-key.ts)
// load the same way. In production the file is named by its variable and has
// no default; in development it is generated once under the data dir (mode
// 0600), like the other operator secrets (secrets.ts).

/** Which variable names the key's file, and the file generated for development. */
export interface Ed25519KeySource {
  readonly variable: string;
  readonly generatedName: string;
}

function parseKey(variable: string, file: string, pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch {
    throw new ConfigError(variable, `${file} is not a PEM private key`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new ConfigError(variable, `${file} must hold an Ed25519 key (openssl genpkey -algorithm ed25519)`);
  }
  return key;
}

async function readKeyFile(variable: string, file: string): Promise<KeyObject> {
  let pem: string;
  try {
    pem = await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError(
      variable,
      `cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'unreadable'})`,
    );
  }
  return parseKey(variable, file, pem);
}

export async function loadEd25519Key(
  config: Pick<Config, 'env' | 'dataDir'>,
  env: Env,
  source: Ed25519KeySource,
): Promise<KeyObject> {
  const { variable } = source;
  const file = env[variable]?.trim();
  if (file !== undefined && file !== '') return readKeyFile(variable, file);
  if (config.env === 'production') {
    throw new ConfigError(
      variable,
      'is required when ENCLAVE_ENV=production (a PEM Ed25519 private key: openssl genpkey -algorithm ed25519)',
    );
  }
  const dir = path.join(config.dataDir, 'secrets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const generated = path.join(dir, source.generatedName);
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' });
  try {
    // 'wx' creates exclusively, so two processes starting at once agree on one key.
    await writeFile(generated, pem, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return readKeyFile(`${variable} (generated)`, generated);
}
