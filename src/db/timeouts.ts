import net from 'node:net';
import { AppError } from '../errors.ts';

// How long the server waits on PostgreSQL (ENCLAVE_DB_TIMEOUT_MS, 5 s by
// default), and the one error a request gets when it has waited that long or
// the database cannot be reached at all.
//
// Two halves, because a frozen server (SIGSTOP, a hung host) never answers:
// - Server side, sent as startup parameters on every app connection:
//   statement_timeout and lock_timeout end slow statements and lock waits on a
//   live server; idle_in_transaction_session_timeout frees the locks of a
//   client that vanished mid-transaction.
// - Client side, the socket every app connection runs on: a write that gets no
//   byte back within the bound destroys the socket. That is the simplest
//   mechanism that both ends the wait and ends the connection, for every query
//   of both drivers (postgres.js and pg), inside transactions or not, TLS or
//   not (it counts bytes, it parses nothing). Destroying the connection, not
//   merely giving up on the query, matters: a transaction whose client gave up
//   must not go on to commit once the server wakes, and a connection left
//   waiting would hold a pool slot until it did. A legitimately slow statement
//   is ended by statement_timeout first (the server answers with an error).
//   New connections are bounded by the drivers' connect timeouts, and a
//   database that is down refuses at once.
// Postgres' own answer to a frozen peer (TCP keepalive) does not help here:
// the kernel of a stopped process still acknowledges.

export type DatabaseUnavailableCode = 'database_unavailable';

export const DB_TIMEOUT_DEFAULT_MS = 5000;
/** Longer than any work the code does between statements of one transaction; a guard for locks, not the request bound. */
const IDLE_IN_TRANSACTION_MS = 60_000;
/** What a client is told to wait before retrying (Retry-After). */
export const DATABASE_RETRY_AFTER_SECONDS = 5;

export class DatabaseUnavailableError extends AppError<DatabaseUnavailableCode> {
  constructor(message: string, options?: { cause?: unknown }) {
    super('database_unavailable', message, options);
  }
}

/** Startup parameters (GUCs) for a connection whose statements are bounded by `timeoutMs`. */
export function sessionTimeouts(timeoutMs: number): Record<string, string> {
  return {
    statement_timeout: String(timeoutMs),
    lock_timeout: String(timeoutMs),
    idle_in_transaction_session_timeout: String(Math.max(timeoutMs, IDLE_IN_TRANSACTION_MS)),
  };
}

/**
 * A TCP socket that destroys itself when something written to it gets no
 * answer within `timeoutMs`. Idle connections (nothing awaited) never time
 * out. A server that answers part of a result and then freezes is not caught
 * (the window is one response long); every later write re-arms the bound.
 */
export function watchedSocket(timeoutMs: number): net.Socket {
  const socket = new net.Socket();
  let timer: NodeJS.Timeout | undefined;
  const disarm = (): void => {
    clearTimeout(timer);
    timer = undefined;
  };
  const arm = (): void => {
    timer ??= setTimeout(() => {
      socket.destroy(new DatabaseUnavailableError(`PostgreSQL did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
  };
  // The stream's internal writers, not write(): connect() puts back the prototype's write.
  const write = socket._write.bind(socket);
  socket._write = (chunk, encoding, callback) => {
    arm();
    write(chunk, encoding, callback);
  };
  const writev = socket._writev?.bind(socket);
  if (writev !== undefined) {
    socket._writev = (chunks, callback) => {
      arm();
      writev(chunks, callback);
    };
  }
  socket.on('data', disarm);
  socket.once('close', disarm);
  return socket;
}

// postgres.js' own connection errors (its `code`), SQLSTATEs that mean the
// server is going away, starting, full, or ended a statement at our timeouts,
// and what the socket itself reports.
const DRIVER_CODES = new Set([
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
]);
const SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300', '57014', '55P03', '25P03']);
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);
// node-postgres (rate limits, job queue) reports these without a code.
const PG_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Query read timeout',
];

interface DriverError {
  code?: unknown;
  message?: unknown;
  cause?: unknown;
}

function looksUnavailable(error: DriverError, fromDatabase: boolean): boolean {
  if (error instanceof DatabaseUnavailableError) return true;
  const code = typeof error.code === 'string' ? error.code : '';
  if (DRIVER_CODES.has(code) || SQLSTATES.has(code) || code.startsWith('08')) return true;
  if (!fromDatabase) return false;
  const message = typeof error.message === 'string' ? error.message : '';
  return NETWORK_CODES.has(code) || PG_MESSAGES.some((prefix) => message.startsWith(prefix));
}

/**
 * The DatabaseUnavailableError an error amounts to, or undefined. Looks down
 * the `cause` chain. A bare network error counts only when it surfaced on a
 * query (postgres.js marks those with `query`) or `fromDatabase` says the
 * caller only talks to the database; elsewhere it may be any peer.
 */
export function asDatabaseUnavailable(
  error: unknown,
  fromDatabase = false,
): DatabaseUnavailableError | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && typeof current === 'object' && current !== null; depth++) {
    const candidate = current as DriverError;
    if (looksUnavailable(candidate, fromDatabase || 'query' in candidate)) {
      return candidate instanceof DatabaseUnavailableError
        ? candidate
        : new DatabaseUnavailableError('the database is unavailable', { cause: error });
    }
    current = candidate.cause;
  }
  return undefined;
}

/** The same bounds for a node-postgres pool (rate limits, the job queue). */
export function pgPoolTimeouts(timeoutMs: number) {
  const session = sessionTimeouts(timeoutMs);
  return {
    connectionTimeoutMillis: timeoutMs,
    // pg connects the socket it is given.
    stream: () => watchedSocket(timeoutMs),
    statement_timeout: Number(session.statement_timeout),
    lock_timeout: Number(session.lock_timeout),
    idle_in_transaction_session_timeout: Number(session.idle_in_transaction_session_timeout),
  };
}
