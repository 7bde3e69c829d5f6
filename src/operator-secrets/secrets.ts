import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { type Config, ConfigError, type Env } from '../config.ts';

// Operator secrets: what the platform itself needs to run, and nothing else.
// They all live in this folder:
//   secrets.ts         the database role passwords and the session-cookie signing key
//   checkpoint-key.ts  the Ed25519 key that signs audit checkpoints
//   relay-signing-key.ts  the Ed25519 key that signs agent cards (both load through ed25519-key.ts)
//   smtp-url.ts        the SMTP URL, which may carry the SMTP password
// Customer credentials (tenants' LLM keys, tokens, …) never live here: they
// live only in src/vault/, and a lint rule in biome.json fails the build if
// either folder imports the other (VLT-7).
//
// A secret has no default: it comes from ENCLAVE_<NAME>, from the file named
// by ENCLAVE_<NAME>_FILE, or — in development only — from a file generated
// once under the data dir (mode 0600) and reused. Errors name the variable
// and the file, never the value.

export type OperatorSecretName = 'db_owner_password' | 'db_app_password' | 'session_key';

function envName(name: OperatorSecretName): string {
  return `ENCLAVE_${name.toUpperCase()}`;
}

/** The trimmed content of the file an ENCLAVE_*_FILE names; errors name the file, never its content. */
export async function readSecretFile(variable: string, file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(variable, `cannot read ${file} (${reason})`);
  }
  return text.trim();
}

async function readLongSecretFile(variable: string, file: string): Promise<string> {
  const value = await readSecretFile(variable, file);
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
  return readLongSecretFile(`${envName(name)}_FILE`, file);
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
  if (file !== undefined && file !== '') return readLongSecretFile(`${variable}_FILE`, file);
  if (direct !== undefined && direct !== '') {
    if (direct.length < 16) throw new ConfigError(variable, 'must be at least 16 characters');
    return direct;
  }
  if (config.env === 'production') {
    throw new ConfigError(variable, `is required when ENCLAVE_ENV=production (or set ${variable}_FILE)`);
  }
  return generatedSecret(config.dataDir, name);
}
