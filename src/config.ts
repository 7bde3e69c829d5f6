import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { DB_TIMEOUT_DEFAULT_MS } from './db/timeouts.ts';
import { AppError } from './errors.ts';
import { MODEL_PROVIDERS, type ModelProvider } from './gateway/provider-names.ts';
import { DEFAULT_MODELS, DEFAULT_UPSTREAMS, modelServed } from './gateway/providers.ts';
import { DEFAULT_POSTURE_INTERVAL_MINUTES, POSTURE_INTERVALS } from './posture/schedule.ts';

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
  /** Longest wait on PostgreSQL for one statement, lock or connect before a 503 (see db/timeouts.ts). */
  readonly dbTimeoutMs: number;
  /** Fastify trustProxy: false, a hop count, or the proxies' addresses. Only then is X-Forwarded-For honoured. */
  readonly trustProxy: false | number | readonly string[];
  /** Binds the first operator's invite to this address. */
  readonly operatorEmail: string | undefined;
  readonly mailFrom: string;
  /** A checkpoint is signed at most this many seconds after a chain head moves (AUD-4, AUD-8). */
  readonly checkpointDelaySeconds: number;
  /** Lines to print at start about settings that still work but will not for long. */
  readonly deprecations: readonly string[];
  /** Write-once directory the signed checkpoints are published to. */
  readonly checkpointDir: string;
  /** Where cold audit archive segments are written, one directory per tenant (AUD-7). */
  readonly auditArchiveDir: string;
  /** Audit events stay in the database this many days (AUD-7; never fewer than 90). */
  readonly auditHotDays: number;
  /** Archive segments are kept this many months after their newest event (AUD-7; never fewer than 24). */
  readonly auditColdMonths: number;
  /** Operator's agent templates, loaded after the built-in ones; undefined means the built-in ones only. */
  readonly templatesDir: string | undefined;
  /** Agent instances live under it, one directory each (`<data dir>/instances`). */
  readonly instancesDir: string;
  /** Instances are reached at `<subdomain>.<agentsDomain>` (AGT-3). */
  readonly agentsDomain: string;
  /** Private or reserved ranges the egress proxy may reach anyway (AGT-4); empty by default. */
  readonly egressAllow: readonly string[];
  /** Private or reserved ranges callbacks may be sent to anyway (RLY-12); empty by default. */
  readonly callbackAllow: readonly string[];
  /**
   * Limits the operator allows to go unenforced on this host (AGT-6), by
   * name. An instance whose limit this host cannot enforce refuses to start
   * unless its name is here: a limit is never dropped silently.
   */
  readonly unenforcedLimits: readonly UnenforcedLimit[];
  /** Worker threads that hash and check passwords, one scrypt each at a time (accounts/password-pool.ts). */
  readonly passwordWorkers: number;
  /** Password checks that may wait for a worker; past this, a sign-in is answered 429 at once. */
  readonly passwordQueue: number;
  /** Where security reports go (RFC 9116 Contact: a mailto: or https: URI), shown on /security; none when unset. */
  readonly securityContact: string | undefined;
  /** The posture verifiers run this often (OPS-5); a latest run older than twice this reads stale. */
  readonly postureIntervalMinutes: number;
  /** Each model provider's API base URL (ENCLAVE_GATEWAY_<PROVIDER>_URL), the public API by default. */
  readonly gatewayUpstreams: Readonly<Record<ModelProvider, string>>;
  /** What `"model": "auto"` becomes (ENCLAVE_GATEWAY_ANTHROPIC_MODEL, ENCLAVE_GATEWAY_OPENAI_MODEL). */
  readonly gatewayAutoModels: Readonly<Record<'anthropic' | 'openai', string>>;
  /** Longest wait for a provider's answer, and between two of its chunks (ENCLAVE_GATEWAY_TIMEOUT_MS). */
  readonly gatewayTimeoutMs: number;
}

/** What `ENCLAVE_UNENFORCED_LIMITS` may name. */
export const UNENFORCED_LIMITS = ['cpu', 'volume', 'processes', 'seccomp'] as const;
export type UnenforcedLimit = (typeof UNENFORCED_LIMITS)[number];

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

/** An email address, after trimming and lowercasing (invites, signup, the operator's address). */
export const EMAIL = /^[^\s@<>"'(),;:\\]+@[^\s@<>"'(),;:\\]+\.[^\s@<>"'(),;:\\]+$/;

export function normalizeEmail(value: string): string | undefined {
  const email = value.trim().toLowerCase();
  return email.length <= 254 && EMAIL.test(email) ? email : undefined;
}

/** An IP address or a CIDR range such as 10.0.0.0/8 or fd00::/8. */
function isIpRange(range: string): boolean {
  const [ip, bits, extra] = range.split('/');
  if (extra !== undefined || ip === undefined || isIP(ip) === 0) return false;
  return bits === undefined || (/^\d{1,3}$/.test(bits) && Number(bits) <= (isIP(ip) === 4 ? 32 : 128));
}

function parseTrustProxy(env: Env): Config['trustProxy'] {
  const raw = read(env, 'ENCLAVE_TRUST_PROXY');
  if (raw === undefined) return false;
  if (/^\d+$/.test(raw)) {
    const hops = Number(raw);
    if (hops >= 1 && hops <= 10) return hops;
  }
  const addresses = raw.split(',').map((part) => part.trim());
  if (!addresses.every(isIpRange)) {
    throw new ConfigError(
      'ENCLAVE_TRUST_PROXY',
      `must be a hop count from 1 to 10 or a comma-separated list of proxy addresses or CIDR ranges (got "${raw}")`,
    );
  }
  return Object.freeze(addresses);
}

function parseOperatorEmail(env: Env): string | undefined {
  const raw = read(env, 'ENCLAVE_OPERATOR_EMAIL');
  if (raw === undefined) return undefined;
  const email = normalizeEmail(raw);
  if (email === undefined)
    throw new ConfigError('ENCLAVE_OPERATOR_EMAIL', `is not an email address (got "${raw}")`);
  return email;
}

/** ENCLAVE_SECURITY_CONTACT: an email address (made a mailto: URI) or an https: or mailto: URI. */
function parseSecurityContact(env: Env): string | undefined {
  const raw = read(env, 'ENCLAVE_SECURITY_CONTACT');
  if (raw === undefined) return undefined;
  const email = normalizeEmail(raw.replace(/^mailto:/i, ''));
  if (email !== undefined) return `mailto:${email}`;
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  if (url?.protocol !== 'https:' || /[\s<>"]/.test(raw)) {
    throw new ConfigError(
      'ENCLAVE_SECURITY_CONTACT',
      `must be an email address or an https: URL (got "${raw}")`,
    );
  }
  return url.href;
}

/** ENCLAVE_POSTURE_INTERVAL_MINUTES: one of POSTURE_INTERVALS, so the verifiers' crontab can say it. */
function parsePostureInterval(env: Env): number {
  const raw = read(env, 'ENCLAVE_POSTURE_INTERVAL_MINUTES');
  if (raw === undefined) return DEFAULT_POSTURE_INTERVAL_MINUTES;
  if (!/^\d{1,4}$/.test(raw) || !POSTURE_INTERVALS.includes(Number(raw))) {
    throw new ConfigError(
      'ENCLAVE_POSTURE_INTERVAL_MINUTES',
      `must be a number of minutes that divides an hour or a day: ${POSTURE_INTERVALS.join(', ')} (got "${raw}")`,
    );
  }
  return Number(raw);
}

function parseMailFrom(env: Env, publicUrl: string): string {
  const raw = read(env, 'ENCLAVE_MAIL_FROM');
  if (raw === undefined) return `Enclave <no-reply@${new URL(publicUrl).hostname}>`;
  const address = /<([^<>]+)>$/.exec(raw)?.[1] ?? raw;
  if (normalizeEmail(address) === undefined || /[\r\n]/.test(raw)) {
    throw new ConfigError('ENCLAVE_MAIL_FROM', `must be an address or "Name <address>" (got "${raw}")`);
  }
  return raw;
}

/** ENCLAVE_CHECKPOINT_INTERVAL's values (minutes dividing an hour), read for one more release. */
export const CHECKPOINT_INTERVALS: readonly number[] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60];

/**
 * Seconds from a head moving to the checkpoint that commits to it (default
 * 10). ENCLAVE_CHECKPOINT_INTERVAL (minutes) is its predecessor: still read,
 * with a deprecation line, when the new variable is not set.
 */
function parseCheckpointDelay(env: Env): { seconds: number; deprecations: string[] } {
  const seconds = parseInteger(env, 'ENCLAVE_CHECKPOINT_DELAY', 1, 3600, 10);
  const raw = read(env, 'ENCLAVE_CHECKPOINT_INTERVAL');
  if (raw === undefined) return { seconds, deprecations: [] };
  if (read(env, 'ENCLAVE_CHECKPOINT_DELAY') !== undefined) {
    return {
      seconds,
      deprecations: [
        'ENCLAVE_CHECKPOINT_INTERVAL is deprecated and ignored because ENCLAVE_CHECKPOINT_DELAY is set; remove it',
      ],
    };
  }
  if (!/^\d{1,2}$/.test(raw) || !CHECKPOINT_INTERVALS.includes(Number(raw))) {
    throw new ConfigError(
      'ENCLAVE_CHECKPOINT_INTERVAL',
      `is deprecated (use ENCLAVE_CHECKPOINT_DELAY, in seconds), and must be a number of minutes that divides an hour: ${CHECKPOINT_INTERVALS.join(', ')} (got "${raw}")`,
    );
  }
  return {
    seconds: Number(raw) * 60,
    deprecations: [
      `ENCLAVE_CHECKPOINT_INTERVAL is deprecated and will be removed in the next release: set ENCLAVE_CHECKPOINT_DELAY=${Number(raw) * 60} (seconds) to keep this behaviour, or leave both unset for checkpoints within 10 seconds`,
    ],
  };
}

function parseDirectory(env: Env, name: string, cwd: string, fallback: string): string {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (raw.includes('\0')) throw new ConfigError(name, 'contains a NUL byte');
  return path.resolve(cwd, raw);
}

function parseTemplatesDir(env: Env, cwd: string): string | undefined {
  const raw = read(env, 'ENCLAVE_TEMPLATES_DIR');
  if (raw === undefined) return undefined;
  if (raw.includes('\0')) throw new ConfigError('ENCLAVE_TEMPLATES_DIR', 'contains a NUL byte');
  return path.resolve(cwd, raw);
}

function parseAgentsDomain(env: Env): string {
  const raw = read(env, 'ENCLAVE_AGENTS_DOMAIN')?.toLowerCase() ?? 'agents.localhost';
  // A DNS name of at least two labels; each instance gets one more label in front of it.
  const label = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
  if (raw.length > 200 || !new RegExp(`^${label}(?:\\.${label})+$`).test(raw)) {
    throw new ConfigError(
      'ENCLAVE_AGENTS_DOMAIN',
      `must be a domain name such as agents.example.com (got "${raw}")`,
    );
  }
  return raw;
}

/** A comma-separated list of IP ranges (`10.0.0.0/8`, `fd00::/8`, a single address). */
function parseCidrList(env: Env, name: string): readonly string[] {
  const raw = read(env, name);
  if (raw === undefined) return Object.freeze([]);
  const ranges = raw.split(',').map((part) => part.trim());
  for (const range of ranges) {
    if (!isIpRange(range)) {
      throw new ConfigError(
        name,
        `must be a comma-separated list of IP addresses or CIDR ranges (got "${range}")`,
      );
    }
  }
  return Object.freeze(ranges);
}

/** A comma-separated list of limit names the operator lets go unenforced. */
function parseUnenforcedLimits(env: Env): readonly UnenforcedLimit[] {
  const raw = read(env, 'ENCLAVE_UNENFORCED_LIMITS');
  if (raw === undefined) return Object.freeze([]);
  const names = raw.split(',').map((part) => part.trim().toLowerCase());
  for (const name of names) {
    if (!(UNENFORCED_LIMITS as readonly string[]).includes(name)) {
      throw new ConfigError(
        'ENCLAVE_UNENFORCED_LIMITS',
        `must be a comma-separated list of ${UNENFORCED_LIMITS.join(', ')} (got "${name.slice(0, 40)}")`,
      );
    }
  }
  return Object.freeze([...new Set(names)] as UnenforcedLimit[]);
}

/** Password workers and their queue: by default one worker per core, and 8 waiting checks per worker. */
function parsePasswordPool(env: Env): { passwordWorkers: number; passwordQueue: number } {
  const passwordWorkers = parseInteger(
    env,
    'ENCLAVE_PASSWORD_WORKERS',
    1,
    64,
    Math.min(availableParallelism(), 64),
  );
  const passwordQueue = parseInteger(env, 'ENCLAVE_PASSWORD_QUEUE', 0, 10_000, 8 * passwordWorkers);
  return { passwordWorkers, passwordQueue };
}

function parseGateway(env: Env): Pick<Config, 'gatewayUpstreams' | 'gatewayAutoModels' | 'gatewayTimeoutMs'> {
  const upstreams = {} as Record<ModelProvider, string>;
  for (const provider of MODEL_PROVIDERS) {
    const name = `ENCLAVE_GATEWAY_${provider.toUpperCase()}_URL`;
    const raw = read(env, name) ?? DEFAULT_UPSTREAMS[provider];
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new ConfigError(name, `must be an http or https URL (got "${raw}")`);
    }
    if (
      !['http:', 'https:'].includes(url.protocol) ||
      url.username !== '' ||
      url.password !== '' ||
      url.search !== '' ||
      url.hash !== ''
    ) {
      throw new ConfigError(
        name,
        `must be an http or https URL with no credentials, query or fragment (got "${raw}")`,
      );
    }
    upstreams[provider] = url.href.replace(/\/+$/, '');
  }
  const autoModels = { ...DEFAULT_MODELS };
  for (const provider of ['anthropic', 'openai'] as const) {
    const name = `ENCLAVE_GATEWAY_${provider.toUpperCase()}_MODEL`;
    const raw = read(env, name);
    if (raw === undefined) continue;
    if (!modelServed(provider, raw))
      throw new ConfigError(name, `must be a ${provider} model name (got "${raw}")`);
    autoModels[provider] = raw;
  }
  return {
    gatewayUpstreams: Object.freeze(upstreams),
    gatewayAutoModels: Object.freeze(autoModels),
    gatewayTimeoutMs: parseInteger(env, 'ENCLAVE_GATEWAY_TIMEOUT_MS', 1000, 3_600_000, 600_000),
  };
}

export function loadConfig(env: Env, cwd: string): Config {
  const environment = parseEnum(env, 'ENCLAVE_ENV', ['development', 'production'] as const, 'development');
  const host = parseHost(env);
  const port = parseInteger(env, 'ENCLAVE_PORT', 1, 65535, 3000);
  const production = environment === 'production';
  const publicUrl = parsePublicUrl(env, host, port, production);
  const dataDir = parseDataDir(env, cwd);
  const checkpointDelay = parseCheckpointDelay(env);
  return Object.freeze({
    env: environment,
    host,
    port,
    publicUrl,
    dataDir,
    databaseUrl: parseDatabaseUrl(env),
    logLevel: parseEnum(env, 'ENCLAVE_LOG_LEVEL', LOG_LEVELS, 'info'),
    workerConcurrency: parseInteger(env, 'ENCLAVE_WORKER_CONCURRENCY', 1, 64, 4),
    dbTimeoutMs: parseInteger(env, 'ENCLAVE_DB_TIMEOUT_MS', 1000, 600_000, DB_TIMEOUT_DEFAULT_MS),
    trustProxy: parseTrustProxy(env),
    operatorEmail: parseOperatorEmail(env),
    mailFrom: parseMailFrom(env, publicUrl),
    securityContact: parseSecurityContact(env),
    postureIntervalMinutes: parsePostureInterval(env),
    checkpointDelaySeconds: checkpointDelay.seconds,
    deprecations: checkpointDelay.deprecations,
    checkpointDir: parseDirectory(env, 'ENCLAVE_CHECKPOINT_DIR', cwd, path.join(dataDir, 'checkpoints')),
    auditArchiveDir: parseDirectory(
      env,
      'ENCLAVE_AUDIT_ARCHIVE_DIR',
      cwd,
      path.join(dataDir, 'audit-archive'),
    ),
    auditHotDays: parseInteger(env, 'ENCLAVE_AUDIT_HOT_DAYS', 90, 36500, 90),
    auditColdMonths: parseInteger(env, 'ENCLAVE_AUDIT_COLD_MONTHS', 24, 1200, 24),
    templatesDir: parseTemplatesDir(env, cwd),
    instancesDir: path.join(dataDir, 'instances'),
    agentsDomain: parseAgentsDomain(env),
    egressAllow: parseCidrList(env, 'ENCLAVE_EGRESS_ALLOW'),
    callbackAllow: parseCidrList(env, 'ENCLAVE_CALLBACK_ALLOW'),
    unenforcedLimits: parseUnenforcedLimits(env),
    ...parsePasswordPool(env),
    ...parseGateway(env),
  });
}
