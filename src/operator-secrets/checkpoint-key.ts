import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Config, ConfigError, type Env } from '../config.ts';

// The operator's checkpoint signing key (AUD-4): Ed25519, as a PKCS#8 PEM
// file. In production it comes from ENCLAVE_CHECKPOINT_KEY_FILE and has no
// default; in development it is generated once under the data dir (mode
// 0600), like the other operator secrets (secrets.ts). What signs with it —
// the checkpoint origin, signer and verifier key string — is audit code, in
// src/audit/checkpoint-signing.ts.

export const CHECKPOINT_KEY_VARIABLE = 'ENCLAVE_CHECKPOINT_KEY_FILE';

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

export async function loadCheckpointKey(
  config: Pick<Config, 'env' | 'dataDir'>,
  env: Env,
): Promise<KeyObject> {
  const file = env[CHECKPOINT_KEY_VARIABLE]?.trim();
  if (file !== undefined && file !== '') return readKeyFile(CHECKPOINT_KEY_VARIABLE, file);
  if (config.env === 'production') {
    throw new ConfigError(
      CHECKPOINT_KEY_VARIABLE,
      'is required when ENCLAVE_ENV=production (a PEM Ed25519 private key: openssl genpkey -algorithm ed25519)',
    );
  }
  const dir = path.join(config.dataDir, 'secrets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const generated = path.join(dir, 'checkpoint_key.pem');
  const { privateKey } = generateKeyPairSync('ed25519');
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' });
  try {
    // 'wx' creates exclusively, so two processes starting at once agree on one key.
    await writeFile(generated, pem, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return readKeyFile(`${CHECKPOINT_KEY_VARIABLE} (generated)`, generated);
}
