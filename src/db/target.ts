import postgres, { type Sql } from 'postgres';
import { sessionTimeouts, watchedSocket } from './timeouts.ts';

// Where the database is and how to reach it as each role. The admin
// credentials (DATABASE_URL, or the embedded superuser) are used only to
// create the roles and grants; migrations run as enclave_owner and every
// request as enclave_app.

export const OWNER_ROLE = 'enclave_owner';
export const APP_ROLE = 'enclave_app';
export const APP_SCHEMA = 'enclave';

export interface Credentials {
  readonly user: string;
  readonly password: string;
}

export interface DbTarget {
  readonly host: string;
  readonly port: number;
  readonly database: string;
  /** libpq sslmode from DATABASE_URL, passed on to every role's connection. */
  readonly sslmode: string | undefined;
  readonly admin: Credentials;
}

export function targetFromUrl(databaseUrl: string): DbTarget {
  const url = new URL(databaseUrl);
  return {
    host: decodeURIComponent(url.hostname).replace(/^\[|\]$/g, ''),
    port: url.port === '' ? 5432 : Number(url.port),
    database: decodeURIComponent(url.pathname.slice(1)),
    sslmode: url.searchParams.get('sslmode') ?? undefined,
    admin: { user: decodeURIComponent(url.username), password: decodeURIComponent(url.password) },
  };
}

export function withDatabase(target: DbTarget, database: string): DbTarget {
  return { ...target, database };
}

export function connectionUrl(target: DbTarget, credentials: Credentials): string {
  const host = target.host.includes(':') ? `[${target.host}]` : target.host;
  const user = encodeURIComponent(credentials.user);
  const password = encodeURIComponent(credentials.password);
  const ssl = target.sslmode === undefined ? '' : `?sslmode=${encodeURIComponent(target.sslmode)}`;
  return `postgres://${user}:${password}@${host}:${target.port}/${encodeURIComponent(target.database)}${ssl}`;
}

export interface ConnectOptions {
  readonly max?: number;
  readonly applicationName?: string;
  /**
   * Bounds every wait on the server (see timeouts.ts): connect, statements,
   * lock waits and unanswered writes. Unset for the admin and migration
   * connections, whose DDL may legitimately run long.
   */
  readonly timeoutMs?: number;
}

export function connect(target: DbTarget, credentials: Credentials, options: ConnectOptions = {}): Sql {
  const ssl = target.sslmode === undefined || target.sslmode === 'disable' ? false : target.sslmode;
  const timeoutMs = options.timeoutMs;
  const bounded =
    timeoutMs === undefined
      ? { connect_timeout: 10 }
      : {
          connect_timeout: timeoutMs / 1000,
          // postgres.js expects a socket it need not connect itself.
          socket: () => watchedSocket(timeoutMs).connect(target.port, target.host),
          // Its default reconnect backoff grows to 20 s during an outage, and a
          // query waits it out before its connect even starts: keep it short.
          backoff: (retries: number) => Math.min(retries, 10) * 0.05,
        };
  return postgres({
    host: target.host,
    port: target.port,
    database: target.database,
    username: credentials.user,
    password: credentials.password,
    ssl: ssl as 'require' | 'prefer' | 'allow' | 'verify-full' | false,
    max: options.max ?? 10,
    idle_timeout: 30,
    ...bounded,
    onnotice: () => {},
    connection: {
      application_name: options.applicationName ?? 'enclave',
      search_path: APP_SCHEMA,
      ...(timeoutMs === undefined ? {} : sessionTimeouts(timeoutMs)),
    },
  });
}
