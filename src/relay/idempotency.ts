import { createHash, randomUUID } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { FastifyRequest } from 'fastify';
import type { Sql } from 'postgres';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { AppError } from '../errors.ts';

// Idempotency keys (RLY-6), as the IETF httpapi draft "The Idempotency-Key
// HTTP Header Field" describes them, for any route that creates something:
//
//   - The key is an Item Structured Field whose value is a String (RFC 8941
//     sf-string): `Idempotency-Key: "8e03978e-…"`. Anything else is 400.
//   - The first request with a key claims it (state in_flight, committed at
//     once), runs, and records its status and body (state done) in the same
//     transaction as whatever it created.
//   - A retry with the same key and the same request (method, path, body)
//     within 24 hours gets the recorded status and body, and runs nothing.
//   - The same key with another request is 422; a retry while the first is
//     still running is 409.
//   - A key older than 24 hours counts as new. A request that fails (throws)
//     releases its key, having created nothing, so it can be retried.
//
// The route's work runs inside the transaction handed to it: its side effects
// (rows, jobs enqueued in it) commit together with the recorded answer, or not
// at all. A claim whose process died is taken over once its lease ends; the
// request that lost it can no longer record its answer, so its own
// transaction rolls back and exactly one of them takes effect.

export type IdempotencyErrorCode =
  | 'idempotency_key_invalid'
  | 'idempotency_key_reused'
  | 'idempotency_request_in_flight'
  | 'idempotency_claim_lost'
  | 'idempotency_response_too_large';

export const IDEMPOTENCY_HEADER = 'idempotency-key';
export const IDEMPOTENCY_KEY_MAX_LENGTH = 255;
/** How long a recorded answer is replayed (the draft leaves it to the server; 24 hours is common). */
export const IDEMPOTENCY_KEY_TTL_HOURS = 24;
/** How long an in-flight claim blocks others after its request stopped answering. */
export const IN_FLIGHT_LEASE_SECONDS = 60;
/** Recorded bodies are bounded; the routes that use keys answer with a few hundred bytes. */
export const RESPONSE_BODY_MAX_BYTES = 65536;

const FIELD = `headers/${IDEMPOTENCY_HEADER}`;

/**
 * The key's value from the header's text, or an AppError naming the header.
 * The header is attacker-controlled: only an sf-string of printable ASCII,
 * 1 to 255 characters once unescaped, and nothing after it, is accepted.
 */
export function parseIdempotencyKey(header: string): string {
  const invalid = (why: string) =>
    new AppError<IdempotencyErrorCode>('idempotency_key_invalid', `Idempotency-Key ${why}`, { field: FIELD });
  const text = header.trim();
  if (!text.startsWith('"')) throw invalid('must be a quoted string, as in Idempotency-Key: "a1b2c3"');
  let key = '';
  let at = 1;
  for (; at < text.length; at += 1) {
    const char = text.charCodeAt(at);
    if (char === 0x22) break;
    if (char === 0x5c) {
      at += 1;
      const escaped = text[at];
      if (escaped !== '"' && escaped !== '\\') throw invalid('may escape only " and \\');
      key += escaped;
    } else if (char < 0x20 || char > 0x7e) {
      throw invalid('may hold printable ASCII characters only');
    } else {
      key += text[at];
    }
  }
  if (at >= text.length) throw invalid('must end with a closing quote');
  if (at !== text.length - 1) throw invalid('must be one quoted string with nothing after it');
  if (key.length === 0 || key.length > IDEMPOTENCY_KEY_MAX_LENGTH) {
    throw invalid(`must be 1 to ${IDEMPOTENCY_KEY_MAX_LENGTH} characters`);
  }
  return key;
}

/** SHA-256 of the method, the path with its query, and the body in RFC 8785 canonical form. */
export function requestFingerprint(request: Pick<FastifyRequest, 'method' | 'url' | 'body'>): Buffer {
  const body = request.body === undefined ? '' : (canonicalize(request.body) ?? '');
  return createHash('sha256').update(`${request.method}\n${request.url}\n${body}`).digest();
}

export interface IdempotentAnswer<Body> {
  readonly status: number;
  readonly body: Body;
}

export interface IdempotencyScope {
  readonly tenantId: string;
  /** Whose keys these are, e.g. `relay_token:<id>`: one caller's key never matches another's. */
  readonly scope: string;
}

export interface IdempotentOptions {
  /** Whether a request without the header is refused (400) or simply runs unrecorded. */
  readonly required: boolean;
}

interface ClaimedKey {
  readonly kind: 'claimed';
  readonly id: string;
}

interface RecordedKey {
  readonly kind: 'recorded';
  readonly fingerprint: Buffer;
  readonly state: 'in_flight' | 'done';
  readonly status: number | null;
  readonly body: unknown;
}

/** Inserts the claim, or takes over an expired key or a dead claim; else reads what is there. */
async function claimKey(
  tx: TenantSql,
  scope: IdempotencyScope,
  key: string,
  fingerprint: Buffer,
  claim: string,
): Promise<ClaimedKey | RecordedKey> {
  const [claimed] = await tx<{ id: string }[]>`
    insert into idempotency_keys (tenant_id, scope, key, fingerprint, claim, state, lease_until, expires_at)
    values (${scope.tenantId}::uuid, ${scope.scope}, ${key}, ${fingerprint}, ${claim}::uuid, 'in_flight',
            now() + make_interval(secs => ${IN_FLIGHT_LEASE_SECONDS}),
            now() + make_interval(hours => ${IDEMPOTENCY_KEY_TTL_HOURS}))
    on conflict (tenant_id, scope, key) do update
      set fingerprint = excluded.fingerprint, claim = excluded.claim, state = 'in_flight',
          lease_until = excluded.lease_until, status = null, response_body = null,
          created_at = now(), expires_at = excluded.expires_at
      where idempotency_keys.expires_at <= now()
         or (idempotency_keys.state = 'in_flight' and idempotency_keys.lease_until <= now())
    returning id`;
  if (claimed !== undefined) return { kind: 'claimed', id: claimed.id };
  // The conflicting row is locked by the upsert above, so it cannot change before this read.
  const [row] = await tx<
    { fingerprint: Buffer; state: 'in_flight' | 'done'; status: number | null; response_body: unknown }[]
  >`
    select fingerprint, state, status, response_body from idempotency_keys
    where tenant_id = ${scope.tenantId}::uuid and scope = ${scope.scope} and key = ${key}`;
  if (row === undefined)
    throw new AppError('idempotency_claim_lost', 'the idempotency key vanished while claimed');
  return {
    kind: 'recorded',
    fingerprint: row.fingerprint,
    state: row.state,
    status: row.status,
    body: row.response_body,
  };
}

function replayOf<Body>(recorded: RecordedKey, fingerprint: Buffer): IdempotentAnswer<Body> {
  if (!recorded.fingerprint.equals(fingerprint)) {
    throw new AppError<IdempotencyErrorCode>(
      'idempotency_key_reused',
      'this Idempotency-Key was used for another request (method, path or body); use a new key',
      { field: FIELD },
    );
  }
  if (recorded.state === 'in_flight' || recorded.status === null) {
    throw new AppError<IdempotencyErrorCode>(
      'idempotency_request_in_flight',
      'the first request with this Idempotency-Key is still being processed; retry later',
    );
  }
  return { status: recorded.status, body: recorded.body as Body };
}

/**
 * Runs `execute` at most once per Idempotency-Key (the rules at the top).
 * `execute` receives the tenant transaction its work must use; its answer is
 * recorded in that transaction and returned (or, on a replay, the recorded one).
 */
export async function runIdempotent<Body>(
  sql: Sql,
  request: Pick<FastifyRequest, 'method' | 'url' | 'body' | 'headers'>,
  scope: IdempotencyScope,
  options: IdempotentOptions,
  execute: (tx: TenantSql) => Promise<IdempotentAnswer<Body>>,
): Promise<IdempotentAnswer<Body> & { readonly replayed: boolean }> {
  const header = request.headers[IDEMPOTENCY_HEADER];
  if (header === undefined) {
    if (options.required) {
      throw new AppError<IdempotencyErrorCode>('idempotency_key_invalid', 'Idempotency-Key is required', {
        field: FIELD,
      });
    }
    return { ...(await withTenant(sql, scope.tenantId, execute)), replayed: false };
  }
  // Node joins repeated headers with ", ", which no single sf-string parses as.
  const key = parseIdempotencyKey(Array.isArray(header) ? header.join(', ') : header);
  const fingerprint = requestFingerprint(request);
  const claim = randomUUID();
  const found = await withTenant(sql, scope.tenantId, (tx) => claimKey(tx, scope, key, fingerprint, claim));
  if (found.kind === 'recorded') return { ...replayOf<Body>(found, fingerprint), replayed: true };
  try {
    const answer = await withTenant(sql, scope.tenantId, async (tx) => {
      const result = await execute(tx);
      const text = result.body === undefined ? null : JSON.stringify(result.body);
      if (text !== null && Buffer.byteLength(text) > RESPONSE_BODY_MAX_BYTES) {
        throw new AppError<IdempotencyErrorCode>(
          'idempotency_response_too_large',
          `an idempotent route answered with more than ${RESPONSE_BODY_MAX_BYTES} bytes`,
        );
      }
      // ::text first: a parameter typed json is JSON-encoded again by the driver, and a replay would answer a string.
      const [done] = await tx`
        update idempotency_keys
        set state = 'done', status = ${result.status}, response_body = ${text}::text::json, lease_until = null
        where id = ${found.id}::uuid and claim = ${claim}::uuid and state = 'in_flight'
        returning id`;
      // Another request took the claim over (its lease ran out): this one must not take effect.
      if (done === undefined) {
        throw new AppError<IdempotencyErrorCode>(
          'idempotency_request_in_flight',
          'another request with this Idempotency-Key took over after this one ran past its lease',
        );
      }
      return result;
    });
    return { ...answer, replayed: false };
  } catch (error) {
    // Nothing of the failed request was committed: free the key for a retry. If this fails too, the lease does it.
    await withTenant(
      sql,
      scope.tenantId,
      (tx) => tx`delete from idempotency_keys where id = ${found.id}::uuid and claim = ${claim}::uuid`,
    ).catch(() => undefined);
    throw error;
  }
}

/**
 * Deletes up to `limit` of the tenant's keys expired at `now` (past their 24 hours), oldest first; returns
 * how many. For the relay_retention job (through serviceQuery; src/relay/retention.ts).
 */
export async function deleteExpiredIdempotencyKeys(
  tx: TenantSql,
  options: { now: Date; limit: number },
): Promise<number> {
  const deleted = await tx`
    delete from idempotency_keys
    where expires_at <= ${options.now}
      and id in (select id from idempotency_keys where expires_at <= ${options.now}
                 order by expires_at limit ${options.limit}::int4)`;
  return deleted.count;
}
