import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import ssh2 from 'ssh2';
import { type Config, ConfigError, type Env } from '../config.ts';

// The operator's support SSH key (AGT-5): the one key an instance whose owner
// allows support accepts. Its private half is an operator secret, read from
// ENCLAVE_SUPPORT_SSH_KEY_FILE (an OpenSSH private key, as `ssh-keygen -t
// ed25519 -N ''` writes it) or, in development only, generated once under the
// data dir (mode 0600). Instances are given only the public half.

export const SUPPORT_KEY_VARIABLE = 'ENCLAVE_SUPPORT_SSH_KEY_FILE';

export interface SupportKey {
  /** Where the private key is, for `ssh -i` and messages. */
  readonly file: string;
  /** The OpenSSH private key text: for the support CLI only. */
  readonly privateKey: string;
  /** `ssh-ed25519 AAAA…`: what instances accept. */
  readonly publicKey: string;
}

/** Tries before giving up: about 4 in 1,000 keys ssh2 generates are ones its own parser refuses. */
const GENERATE_ATTEMPTS = 32;

type ParsedKey = Exclude<ReturnType<typeof ssh2.utils.parseKey>, Error | unknown[]>;

function parsePrivate(text: string): ParsedKey | undefined {
  const parsed = ssh2.utils.parseKey(text);
  if (parsed instanceof Error || Array.isArray(parsed) || !parsed.isPrivateKey()) return undefined;
  return parsed;
}

/** A new Ed25519 key pair in OpenSSH form whose private half ssh2 itself is checked to read back. */
export function generateSupportKeyPair(): { readonly private: string; readonly public: string } {
  for (let attempt = 0; attempt < GENERATE_ATTEMPTS; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'enclave support' });
    if (parsePrivate(pair.private) !== undefined) return pair;
  }
  throw new Error('could not generate a support key that parses');
}

async function generated(dataDir: string): Promise<string> {
  const dir = path.join(dataDir, 'secrets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, 'support_ssh_key');
  const existing = await readFile(file, 'utf8').catch(() => undefined);
  // A key an earlier version generated and ssh2 cannot read would stop every start: it is replaced
  // (a development key only: production names its own file), and the old one kept beside it.
  if (existing !== undefined && parsePrivate(existing) === undefined) {
    await rename(file, `${file}.unreadable`);
  }
  try {
    // 'wx': two processes starting at once keep the first key.
    await writeFile(file, generateSupportKeyPair().private, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return file;
}

export async function loadSupportKey(config: Pick<Config, 'env' | 'dataDir'>, env: Env): Promise<SupportKey> {
  const named = env[SUPPORT_KEY_VARIABLE]?.trim() ?? '';
  if (named === '' && config.env === 'production') {
    throw new ConfigError(
      SUPPORT_KEY_VARIABLE,
      'is required when ENCLAVE_ENV=production (an OpenSSH private key file)',
    );
  }
  const file = named === '' ? await generated(config.dataDir) : path.resolve(named);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(SUPPORT_KEY_VARIABLE, `cannot read ${file} (${reason})`);
  }
  const parsed = parsePrivate(text);
  // The key text is a secret: the message names the file and the rule only.
  if (parsed === undefined) {
    throw new ConfigError(
      SUPPORT_KEY_VARIABLE,
      `${file} is not an unencrypted OpenSSH private key (make one with ssh-keygen -t ed25519 -N '')`,
    );
  }
  return { file, privateKey: text, publicKey: `${parsed.type} ${parsed.getPublicSSH().toString('base64')}` };
}
