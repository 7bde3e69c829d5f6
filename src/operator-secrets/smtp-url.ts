import { type Config, ConfigError, type Env } from '../config.ts';
import { readSecretFile } from './secrets.ts';

// The SMTP URL (smtp://user:password@host:port) may carry the SMTP password,
// so it is an operator secret: it comes from ENCLAVE_SMTP_URL or from the file
// named by ENCLAVE_SMTP_URL_FILE, and is not a Config field. Config is handed
// to many modules (headers, OpenAPI, serializers); this value goes only to the
// mailer, and the HTTP app learns only whether it is set. Unset means the
// development outbox; production requires it.

export const SMTP_URL_VARIABLE = 'ENCLAVE_SMTP_URL';
export const SMTP_URL_FILE_VARIABLE = 'ENCLAVE_SMTP_URL_FILE';

function readVariable(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

// The operator (or whoever can set the environment) controls the value, and it
// may hold a password: every error describes the problem and never prints it.
function checkSmtpUrl(variable: string, raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(variable, 'is not a valid URL (expected smtp://user:password@host:port)');
  }
  if (url.protocol !== 'smtp:' && url.protocol !== 'smtps:') {
    // Not even the scheme is echoed: a mistyped value can put the password there.
    throw new ConfigError(variable, 'must start with smtp:// or smtps://');
  }
  if (url.hostname === '') throw new ConfigError(variable, 'has no host');
  return raw;
}

/** The SMTP URL, or undefined (development only) for the /dev/mail outbox. */
export async function loadSmtpUrl(config: Pick<Config, 'env'>, env: Env): Promise<string | undefined> {
  const direct = readVariable(env, SMTP_URL_VARIABLE);
  const file = readVariable(env, SMTP_URL_FILE_VARIABLE);
  if (direct !== undefined && file !== undefined) {
    throw new ConfigError(
      SMTP_URL_VARIABLE,
      `set either ${SMTP_URL_VARIABLE} or ${SMTP_URL_FILE_VARIABLE}, not both`,
    );
  }
  if (file !== undefined) {
    const fromFile = await readSecretFile(SMTP_URL_FILE_VARIABLE, file);
    if (fromFile === '') throw new ConfigError(SMTP_URL_FILE_VARIABLE, `${file} is empty`);
    return checkSmtpUrl(SMTP_URL_FILE_VARIABLE, fromFile);
  }
  if (direct !== undefined) return checkSmtpUrl(SMTP_URL_VARIABLE, direct);
  if (config.env === 'production') {
    throw new ConfigError(
      SMTP_URL_VARIABLE,
      `is required when ENCLAVE_ENV=production (or set ${SMTP_URL_FILE_VARIABLE})`,
    );
  }
  return undefined;
}
