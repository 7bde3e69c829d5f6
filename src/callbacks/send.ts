import { type ClientRequest, request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import {
  type CallbackRules,
  type CallbackTarget,
  CallbackUrlError,
  parseCallbackUrl,
  resolveCallbackDestination,
} from './destination.ts';

// One attempt to POST a callback (RLY-12). The URL's name is resolved on
// every attempt, each address it resolves to is checked with the
// registration's rules, and the request goes to an address that was checked,
// as an IP literal: nothing resolves the name a second time, so a rebinding
// DNS answer cannot swap the destination between check and connect. The name
// is still the Host header and, for https, the SNI name and the name the
// certificate must match. Redirects are never followed: a 3xx is its status.
//
// The peer is whoever the URL's owner points it at, and may misbehave on
// purpose: the answer is read up to a cap (its first 1 KB kept for the
// delivery log), and one timer bounds the whole attempt (DNS, connect, TLS,
// headers, body) however slowly bytes trickle. Nothing the peer does makes
// this throw or hang; the outcome is a CallbackAttempt.

export const CALLBACK_TIMEOUT_MS = 10_000;
/** Response bytes read before the attempt is cut as too_large. */
export const CALLBACK_MAX_RESPONSE_BYTES = 64 * 1024;
/** Response bytes kept for the delivery log. */
export const RESPONSE_PREFIX_BYTES = 1024;

export type CallbackFailure =
  | 'invalid_url'
  | 'dns'
  | 'forbidden_destination'
  | 'timeout'
  | 'refused'
  | 'unreachable'
  | 'tls'
  | 'connection'
  | 'too_large';

export interface CallbackRequest {
  readonly url: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body: string | Uint8Array;
  readonly timeoutMs?: number;
  readonly maxResponseBytes?: number;
}

export interface CallbackAttempt {
  /** The answer's status, when its head arrived (also with too_large, or a timeout while the body trickled). */
  readonly status: number | undefined;
  readonly latencyMs: number;
  /** The first RESPONSE_PREFIX_BYTES of the body as UTF-8 (NULs replaced: the log is a text column). */
  readonly responsePrefix: string;
  readonly error: CallbackFailure | undefined;
  /** Why it failed, for the operator's log; may name the resolved address. */
  readonly reason: string | undefined;
  /** The checked address the request went to; undefined when none was connected to. */
  readonly address: string | undefined;
}

type Outcome = Omit<CallbackAttempt, 'latencyMs'>;

const NO_OUTCOME: Outcome = Object.freeze({
  status: undefined,
  responsePrefix: '',
  error: undefined,
  reason: undefined,
  address: undefined,
});

/** Errors raised before a connection exists: the next checked address may still answer. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

function failureOf(code: string): CallbackFailure {
  if (code === 'ECONNREFUSED') return 'refused';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'EADDRNOTAVAIL') return 'unreachable';
  if (/^(ERR_TLS|ERR_SSL|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO)/.test(code)) return 'tls';
  return 'connection';
}

const errorCode = (error: unknown): string =>
  String((error as { code?: unknown } | undefined)?.code ?? (error as Error | undefined)?.name ?? 'error');

const prefixText = (chunks: readonly Buffer[]): string =>
  new TextDecoder('utf-8', { fatal: false }).decode(Buffer.concat(chunks)).replaceAll('\0', '\uFFFD');

/** POSTs to one checked address; settles once, never rejects, and leaves no socket open. */
function exchange(
  target: CallbackTarget,
  address: string,
  request: CallbackRequest,
  maxResponseBytes: number,
  deadline: AbortSignal,
): Promise<Outcome> {
  const { promise, resolve } = Promise.withResolvers<Outcome>();
  const body = typeof request.body === 'string' ? Buffer.from(request.body) : request.body;
  const secure = target.url.protocol === 'https:';
  const options: RequestOptions = {
    // address is a checked IP literal, so no lookup happens here.
    host: address,
    port: target.port,
    method: 'POST',
    path: `${target.url.pathname}${target.url.search}`,
    headers: { ...request.headers, host: target.url.host, 'content-length': String(body.byteLength) },
    agent: false,
    // SNI and certificate verification against the name; an IP literal URL is verified against its address.
    ...(secure && target.ip === undefined ? { servername: target.hostname } : {}),
  };
  const prefix: Buffer[] = [];
  let prefixBytes = 0;
  let received = 0;
  let status: number | undefined;
  let settled = false;
  let req: ClientRequest | undefined;

  const settle = (fields: Partial<Outcome>): void => {
    if (settled) return;
    settled = true;
    deadline.removeEventListener('abort', onDeadline);
    req?.destroy();
    resolve({ ...NO_OUTCOME, address, status, responsePrefix: prefixText(prefix), ...fields });
  };
  const onDeadline = (): void => settle({ error: 'timeout', reason: 'the attempt timed out' });
  const onError = (error: unknown): void => {
    const code = errorCode(error);
    settle({
      error: failureOf(code),
      reason: `connection failed (${code.slice(0, 60)})`,
      ...(CONNECT_ERRORS.has(code) ? { address: undefined } : {}),
    });
  };

  const onResponse = (res: IncomingMessage): void => {
    status = res.statusCode;
    res.on('data', (chunk: Buffer) => {
      received += chunk.byteLength;
      if (prefixBytes < RESPONSE_PREFIX_BYTES) {
        const part = chunk.subarray(0, RESPONSE_PREFIX_BYTES - prefixBytes);
        prefix.push(part);
        prefixBytes += part.byteLength;
      }
      if (received > maxResponseBytes) {
        settle({ error: 'too_large', reason: `the answer is over ${maxResponseBytes} bytes` });
      }
    });
    res.once('end', () => settle({}));
    res.once('error', onError);
    res.once('close', () => settle({ error: 'connection', reason: 'the answer ended early' }));
  };

  req = (secure ? httpsRequest : httpRequest)(options, onResponse);
  req.on('error', onError);
  if (deadline.aborted) onDeadline();
  else deadline.addEventListener('abort', onDeadline, { once: true });
  req.end(body);
  return promise;
}

/**
 * One delivery attempt to `request.url`, checked against `rules` now. Every
 * peer misbehaviour (refusal, reset, a huge or trickling answer, a forbidden
 * address from DNS) is an outcome with an error code, never a throw.
 */
export async function sendCallback(
  request: CallbackRequest,
  rules: Pick<CallbackRules, 'production' | 'allow' | 'hostRanges' | 'lookup'>,
): Promise<CallbackAttempt> {
  const started = performance.now();
  const deadline = new AbortController();
  // A ref'd timer (AbortSignal.timeout's is not): the attempt ends at it even with no socket open yet.
  const timer = setTimeout(() => deadline.abort(), request.timeoutMs ?? CALLBACK_TIMEOUT_MS);
  try {
    const outcome = await attempt(request, rules, deadline.signal);
    return { ...outcome, latencyMs: Math.round(performance.now() - started) };
  } finally {
    clearTimeout(timer);
  }
}

async function attempt(
  request: CallbackRequest,
  rules: Pick<CallbackRules, 'production' | 'allow' | 'hostRanges' | 'lookup'>,
  deadline: AbortSignal,
): Promise<Outcome> {
  let target: CallbackTarget;
  try {
    // The URL was checked at registration; the rules (production, ranges) may have changed since.
    target = parseCallbackUrl(request.url, rules);
  } catch (error) {
    if (error instanceof CallbackUrlError)
      return { ...NO_OUTCOME, error: 'invalid_url', reason: error.message };
    throw error;
  }
  const timedOut = new Promise<undefined>((resolve) => {
    if (deadline.aborted) resolve(undefined);
    deadline.addEventListener('abort', () => resolve(undefined), { once: true });
  });
  const check = await Promise.race([resolveCallbackDestination(target, rules), timedOut]);
  if (check === undefined) return { ...NO_OUTCOME, error: 'timeout', reason: 'DNS lookup timed out' };
  if (!check.ok) return { ...NO_OUTCOME, error: check.code, reason: check.reason };
  const maxResponseBytes = request.maxResponseBytes ?? CALLBACK_MAX_RESPONSE_BYTES;
  let outcome: Outcome = NO_OUTCOME;
  // Only the checked addresses, in the resolver's order; the next one only when this one refused the connection.
  for (const address of check.addresses) {
    outcome = await exchange(target, address, request, maxResponseBytes, deadline);
    if (outcome.address !== undefined) break;
  }
  return outcome;
}
