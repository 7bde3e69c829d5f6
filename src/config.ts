import path from 'node:path';
import { AppError } from './errors.ts';

// Every ENCLAVE_* setting, parsed once at boot into a frozen object. A bad
// value stops start-up with one line naming the variable; values that may be
// secret (DATABASE_URL) are never echoed back.

export type ConfigErrorCode = 'config_invalid';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface Config {
  readonly env: 'development' | 'production';
  readonly host: string;
  readonly port: number;
  /** Origin the platform is reached at, without a trailing slash. */
  readonly publicUrl: string;
  readonly dataDir: string;
  /** Admin connection string; undefined means the embedded cluster. */
  readonly databaseUrl: string | undefined;
  readonly logLevel: LogLevel;
  readonly workerConcurrency: number;
}

export type Env = Readonly<Record<string, string | undefined>>;

export class ConfigError extends AppError<ConfigErrorCode> {
  readonly variable: string;

  constructor(variable: string, problem: string) {
    super('config_invalid', `${variable}: ${problem}`);
    this.variable = variable;
  }
}

function read(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

function parseEnum<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  throw new ConfigError(name, `must be one of ${allowed.join(', ')} (got "${raw}")`);
}

function parseInteger(env: Env, name: string, min: number, max: number, fallback: number): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new ConfigError(name, `must be an integer from ${min} to ${max} (got "${raw}")`);
  }
  return Number(raw);
}

function parseHost(env: Env): string {
  const raw = read(env, 'ENCLAVE_HOST');
  if (raw === undefined) return '127.0.0.1';
  // A hostname or an IP literal; anything with a scheme, port or path is a mistake.
  if (!/^(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:]+:[0-9a-fA-F:.]*|[A-Za-z0-9.-]+)$/.test(raw)) {
    throw new ConfigError('ENCLAVE_HOST', `must be a hostname or IP address (got "${raw}")`);
  }
  return raw.startsWith('[') ? raw.slice(1, -1) : raw;
}

function parsePublicUrl(env: Env, host: string, port: number, production: boolean): string {
  const raw = read(env, 'ENCLAVE_PUBLIC_URL');
  if (raw === undefined) {
    // The derived http://host:port default is for development; production must name its https origin.
    if (production) {
      throw new ConfigError(
        'ENCLAVE_PUBLIC_URL',
        'is required when ENCLAVE_ENV=production (an https origin)',
      );
    }
    const shownHost =
      host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
    return `http://${shownHost}:${port}`;
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError('ENCLAVE_PUBLIC_URL', `must be an absolute http(s) URL (got "${raw}")`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError('ENCLAVE_PUBLIC_URL', `must use http or https (got "${url.protocol}")`);
  }
  if (
    url.pathname !== '/' ||
    url.search !== '' ||
    url.hash !== '' ||
    url.username !== '' ||
    url.password !== ''
  ) {
    throw new ConfigError(
      'ENCLAVE_PUBLIC_URL',
      'must be an origin only, with no path, query, fragment or credentials',
    );
  }
  if (production && url.protocol !== 'https:') {
    throw new ConfigError('ENCLAVE_PUBLIC_URL', 'must use https when ENCLAVE_ENV=production');
  }
  return url.origin;
}

function parseDatabaseUrl(env: Env): string | undefined {
  const raw = read(env, 'DATABASE_URL');
  if (raw === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // The value may hold a password: describe it, never print it.
    throw new ConfigError(
      'DATABASE_URL',
      'is not a valid URL (expected postgres://user:password@host:port/database)',
    );
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(
      'DATABASE_URL',
      `must start with postgres:// or postgresql:// (got "${url.protocol}//")`,
    );
  }
  if (url.hostname === '') throw new ConfigError('DATABASE_URL', 'has no host');
  if (url.pathname.length <= 1) throw new ConfigError('DATABASE_URL', 'has no database name');
  return raw;
}

function parseDataDir(env: Env, cwd: string): string {
  const raw = read(env, 'ENCLAVE_DATA_DIR') ?? './.enclave';
  if (raw.includes('\0')) throw new ConfigError('ENCLAVE_DATA_DIR', 'contains a NUL byte');
  return path.resolve(cwd, raw);
}

export function loadConfig(env: Env, cwd: string): Config {
  const environment = parseEnum(env, 'ENCLAVE_ENV', ['development', 'production'] as const, 'development');
  const host = parseHost(env);
  const port = parseInteger(env, 'ENCLAVE_PORT', 1, 65535, 3000);
  return Object.freeze({
    env: environment,
    host,
    port,
    publicUrl: parsePublicUrl(env, host, port, environment === 'production'),
    dataDir: parseDataDir(env, cwd),
    databaseUrl: parseDatabaseUrl(env),
    logLevel: parseEnum(env, 'ENCLAVE_LOG_LEVEL', LOG_LEVELS, 'info'),
    workerConcurrency: parseInteger(env, 'ENCLAVE_WORKER_CONCURRENCY', 1, 64, 4),
  });
}
