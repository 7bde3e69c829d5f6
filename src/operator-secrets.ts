import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Config, ConfigError, type Env } from './config.ts';

// Operator secrets: what the platform itself needs to run (database role
// passwords, the session-cookie signing key; the audit checkpoint key, an
// Ed25519 key, is loaded the same way by src/audit/checkpoint-key.ts). Customer credentials
// never live here. A secret has no default: it comes from ENCLAVE_<NAME>,
// from the file named by ENCLAVE_<NAME>_FILE, or — in development only — from
// a file generated once under the data dir (mode 0600) and reused.

export type OperatorSecretName = 'db_owner_password' | 'db_app_password' | 'session_key';

function envName(name: OperatorSecretName): string {
  return `ENCLAVE_${name.toUpperCase()}`;
}

async function readSecretFile(variable: string, file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(variable, `cannot read ${file} (${reason})`);
  }
  const value = text.trim();
  if (value.length < 16)
    throw new ConfigError(variable, `${file} must hold a secret of at least 16 characters`);
  return value;
}

async function generatedSecret(dataDir: string, name: OperatorSecretName): Promise<string> {
  const dir = path.join(dataDir, 'secrets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, name);
  try {
    // 'wx' creates exclusively, so two processes starting at once agree on one value.
    await writeFile(file, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return readSecretFile(`${envName(name)}_FILE`, file);
}

export async function loadOperatorSecret(
  config: Config,
  env: Env,
  name: OperatorSecretName,
): Promise<string> {
  const variable = envName(name);
  const direct = env[variable];
  const file = env[`${variable}_FILE`];
  if (direct !== undefined && direct !== '' && file !== undefined && file !== '') {
    throw new ConfigError(variable, `set either ${variable} or ${variable}_FILE, not both`);
  }
  if (file !== undefined && file !== '') return readSecretFile(`${variable}_FILE`, file);
  if (direct !== undefined && direct !== '') {
    if (direct.length < 16) throw new ConfigError(variable, 'must be at least 16 characters');
    return direct;
  }
  if (config.env === 'production') {
    throw new ConfigError(variable, `is required when ENCLAVE_ENV=production (or set ${variable}_FILE)`);
  }
  return generatedSecret(config.dataDir, name);
}
