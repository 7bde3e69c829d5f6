import type { Sql } from 'postgres';
import { isUuid, serviceQuery, type TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { enqueueJob } from '../jobs/queue.ts';
import { createSecretDeriver } from '../webhooks/derived-secrets.ts';
import { signatureHeader, signV1, signV1a } from '../webhooks/signature.ts';
import type { CallbackRules } from './destination.ts';
import { type CallbackAttempt, type CallbackRequest, RESPONSE_PREFIX_BYTES, sendCallback } from './send.ts';

// The `callback_deliver` job (RLY-7): one attempt series of one delivery.
// Each run makes one attempt: it signs the stored payload (Standard Webhooks:
// webhook-id is the delivery's, the same on every attempt and replay;
// webhook-timestamp is now), sends it with sendCallback (RLY-12), records the
// attempt and, when it failed and the schedule has a next step, enqueues the
// same job key again with run_at at that step, in the same transaction as the
// record (OPS-2). graphile-worker's own retry (exponential backoff) is only
// for a run that throws (the database went away): the schedule is ours.
//
// Schedule: attempt 1 at once, then 5 s, 5 min, 30 min, 2 h, 5 h and 10 h
// after the attempt before: 7 attempts over about 17 h 35 min. After the
// 7th fails the delivery is failed and its endpoint's consecutive_failures
// goes up by one; DISABLE_AFTER_FAILED_DELIVERIES failed deliveries in a row
// disable the endpoint with a reason its owner sees. A success resets it.
//
// A worker killed mid-attempt (kill -9) leaves its job and its endpoint's
// queue locked: graphile-worker frees a lock only after 4 hours. An attempt is
// bounded (10 s send, plus the database's bound), so src/jobs/stale-locks.ts
// frees a lock older than STALE_LOCK_SECONDS (every minute, and at every
// worker start), and the
// delivery, still pending with its attempt unrecorded, is sent again with
// the same webhook-id (a receiver that got the first dedupes on it).
//
// Slow endpoints: every delivery job of an endpoint runs in the endpoint's
// own named queue (callbackQueue), one at a time, so 1,000 events to an
// endpoint that answers in 10 s hold one worker slot, never all of them.

export const CALLBACK_DERIVATION_LABEL = 'enclave.callback.secret.v1';
/** Seconds before each attempt, after the one before: index 0 is the first attempt. */
export const RETRY_DELAYS_SECONDS: readonly number[] = [0, 5, 300, 1800, 7200, 18_000, 36_000];
export const ATTEMPTS_PER_SERIES = RETRY_DELAYS_SECONDS.length;
/** Failed deliveries in a row that disable the endpoint. */
export const DISABLE_AFTER_FAILED_DELIVERIES = 5;

export type CallbackDeliverErrorCode = 'callback_deliver_payload_invalid';

export interface CallbackDeliverPayload {
  tenant_id: string;
  delivery_id: string;
  /** The attempt number that began this series (a replay continues the count); 1 when absent. */
  first_attempt?: number;
}

/** The named queue of an endpoint's delivery jobs: one at a time per endpoint. */
export const callbackQueue = (endpointId: string): string => `callback:${endpointId}`;
export const callbackJobKey = (deliveryId: string): string => `callback_deliver:${deliveryId}`;

/** Enqueues (or moves) a delivery's job, in the caller's transaction. */
export async function enqueueCallbackDelivery(
  tx: TenantSql,
  delivery: { tenantId: string; id: string; endpointId: string; firstAttempt?: number; runAt?: Date },
): Promise<void> {
  await enqueueJob(
    tx,
    'callback_deliver',
    {
      tenant_id: delivery.tenantId,
      delivery_id: delivery.id,
      ...(delivery.firstAttempt === undefined ? {} : { first_attempt: delivery.firstAttempt }),
    },
    {
      jobKey: callbackJobKey(delivery.id),
      queue: callbackQueue(delivery.endpointId),
      ...(delivery.runAt === undefined ? {} : { runAt: delivery.runAt }),
    },
  );
}

function payloadOf(value: unknown): { tenantId: string; deliveryId: string; firstAttempt: number } {
  const payload = value as { tenant_id?: unknown; delivery_id?: unknown; first_attempt?: unknown } | null;
  const first = payload?.first_attempt ?? 1;
  if (!isUuid(payload?.tenant_id) || !isUuid(payload.delivery_id) || !Number.isSafeInteger(first)) {
    throw new AppError<CallbackDeliverErrorCode>(
      'callback_deliver_payload_invalid',
      'callback_deliver: the payload needs a tenant_id and a delivery_id (uuids)',
    );
  }
  return { tenantId: payload.tenant_id, deliveryId: payload.delivery_id, firstAttempt: Number(first) };
}

interface DeliveryRow {
  endpoint_id: string;
  webhook_id: string;
  /** Null once relay retention removed it (RLY-9, callbacks/retention.ts). */
  payload: string | null;
  state: string;
  attempts: number;
  url: string;
  endpoint_state: string;
  secret_salt: Buffer;
  previous_salt: Buffer | null;
  previous_salt_until: Date | null;
  sign_v1a: boolean;
}

export interface CallbackDeliveryDeps {
  readonly sql: Sql;
  readonly sessionKey: string;
  readonly rules: Pick<CallbackRules, 'production' | 'allow' | 'hostRanges' | 'lookup'>;
  /** What time it is (signing, next_attempt_at); the system clock when absent. */
  readonly clock?: () => Date;
  /** Bounds of one attempt; send.ts's defaults when absent. */
  readonly send?: Pick<CallbackRequest, 'timeoutMs' | 'maxResponseBytes'>;
}

/** The first RESPONSE_PREFIX_BYTES of text as UTF-8, cut on a character boundary (the column's bound is in bytes). */
function prefixOf(text: string): string {
  let cut = text;
  while (Buffer.byteLength(cut) > RESPONSE_PREFIX_BYTES) cut = cut.slice(0, -1);
  return cut;
}

function describeFailure(outcome: CallbackAttempt): string {
  return outcome.error ?? `HTTP ${outcome.status ?? 'no answer'}`;
}

export function createCallbackDelivery(deps: CallbackDeliveryDeps) {
  const derived = createSecretDeriver(deps.sessionKey, CALLBACK_DERIVATION_LABEL);
  const now = () => deps.clock?.() ?? new Date();

  /** The webhook-signature header: v1 under every valid secret, plus v1a when asked for. */
  function sign(row: DeliveryRow, payload: string, endpointId: string, timestamp: number): string {
    const salts = [row.secret_salt];
    if (row.previous_salt !== null && row.previous_salt_until !== null && row.previous_salt_until > now()) {
      salts.push(row.previous_salt);
    }
    const signatures = salts.map((salt) =>
      signV1(derived.secret(endpointId, salt), row.webhook_id, timestamp, payload),
    );
    if (row.sign_v1a) {
      signatures.push(
        ...salts.map((salt) =>
          signV1a(derived.signingKey(endpointId, salt), row.webhook_id, timestamp, payload),
        ),
      );
    }
    return signatureHeader(signatures);
  }

  async function record(
    tenantId: string,
    deliveryId: string,
    seenAttempts: number,
    firstAttempt: number,
    attemptedAt: Date,
    outcome: CallbackAttempt,
  ): Promise<void> {
    await serviceQuery(deps.sql, { tenantId, reason: 'callbacks: record a delivery attempt' }, async (tx) => {
      const [current] = await tx<{ state: string; attempts: number; endpoint_id: string }[]>`
        select state, attempts, endpoint_id from callback_deliveries where id = ${deliveryId} for update`;
      // A replay or a second run of this job recorded in between: this outcome is not the current series'.
      if (current === undefined || current.state !== 'pending' || current.attempts !== seenAttempts) return;
      const number = seenAttempts + 1;
      const status =
        outcome.status !== undefined && outcome.status >= 100 && outcome.status <= 599
          ? outcome.status
          : null;
      await tx`
        insert into callback_attempts
          (tenant_id, delivery_id, number, attempted_at, status, latency_ms, error, response_prefix)
        values (${tenantId}, ${deliveryId}, ${number}, ${attemptedAt}, ${status}, ${outcome.latencyMs},
          ${outcome.error ?? null}, ${prefixOf(outcome.responsePrefix)})`;
      const succeeded = outcome.error === undefined && status !== null && status >= 200 && status < 300;
      const step = number - firstAttempt + 1;
      if (succeeded || step >= ATTEMPTS_PER_SERIES) {
        await tx`
          update callback_deliveries
          set state = ${succeeded ? 'succeeded' : 'failed'}, attempts = ${number}, last_status = ${status},
            next_attempt_at = null, finished_at = ${attemptedAt}
          where id = ${deliveryId}`;
        if (succeeded) {
          await tx`update callback_endpoints set consecutive_failures = 0 where id = ${current.endpoint_id}`;
        } else {
          const reason = `disabled after ${DISABLE_AFTER_FAILED_DELIVERIES} deliveries in a row failed (last: ${describeFailure(outcome)})`;
          await tx`
            update callback_endpoints
            set consecutive_failures = consecutive_failures + 1,
              state = case when consecutive_failures + 1 >= ${DISABLE_AFTER_FAILED_DELIVERIES}
                then 'disabled' else state end,
              disabled_reason = case when consecutive_failures + 1 >= ${DISABLE_AFTER_FAILED_DELIVERIES}
                then coalesce(disabled_reason, ${reason}) else disabled_reason end,
              updated_at = now()
            where id = ${current.endpoint_id}`;
        }
        return;
      }
      const next = new Date(attemptedAt.getTime() + (RETRY_DELAYS_SECONDS[step] ?? 0) * 1000);
      await tx`
        update callback_deliveries
        set attempts = ${number}, last_status = ${status}, next_attempt_at = ${next}
        where id = ${deliveryId}`;
      await enqueueCallbackDelivery(tx, {
        tenantId,
        id: deliveryId,
        endpointId: current.endpoint_id,
        firstAttempt,
        runAt: next,
      });
    });
  }

  return {
    /** The `callback_deliver` job: one attempt, recorded; the next one scheduled when it failed. */
    async deliver(payload: unknown): Promise<void> {
      const { tenantId, deliveryId, firstAttempt } = payloadOf(payload);
      const row = await serviceQuery(
        deps.sql,
        { tenantId, reason: 'callbacks: load a delivery to send' },
        async (tx) => {
          const [found] = await tx<DeliveryRow[]>`
            select d.endpoint_id, d.webhook_id, d.payload, d.state, d.attempts, e.url,
              e.state as endpoint_state, e.secret_salt, e.previous_salt, e.previous_salt_until, e.sign_v1a
            from callback_deliveries d join callback_endpoints e on e.id = d.endpoint_id
            where d.id = ${deliveryId}`;
          return found;
        },
      );
      if (row === undefined || row.state !== 'pending') return;
      // A disabled endpoint is sent nothing: the delivery ends failed, so replay-failed sends it after a re-enable.
      // A delivery without its payload (retention never takes a pending one's; this is a guard) ends failed too.
      if (row.endpoint_state !== 'enabled' || row.payload === null) {
        await serviceQuery(
          deps.sql,
          { tenantId, reason: 'callbacks: fail a delivery to a disabled endpoint' },
          (tx) =>
            tx`update callback_deliveries set state = 'failed', next_attempt_at = null, finished_at = ${now()}
            where id = ${deliveryId} and state = 'pending'`,
        );
        return;
      }
      const body = row.payload;
      const attemptedAt = now();
      const timestamp = Math.floor(attemptedAt.getTime() / 1000);
      const outcome = await sendCallback(
        {
          url: row.url,
          body,
          headers: {
            'content-type': 'application/json',
            'user-agent': 'Enclave-Callbacks/1',
            'webhook-id': row.webhook_id,
            'webhook-timestamp': String(timestamp),
            'webhook-signature': sign(row, body, row.endpoint_id, timestamp),
          },
          ...deps.send,
        },
        deps.rules,
      );
      await record(tenantId, deliveryId, row.attempts, firstAttempt, attemptedAt, outcome);
    },
  };
}

export type CallbackDelivery = ReturnType<typeof createCallbackDelivery>;

/**
 * Starts a new attempt series of a finished delivery, with the same
 * webhook-id (the receiver dedupes on it). Returns false when the delivery is
 * still pending (its series runs), its payload expired (RLY-9: there is
 * nothing to send), or it does not exist in this tenant.
 */
export async function replayDelivery(tx: TenantSql, tenantId: string, deliveryId: string): Promise<boolean> {
  const [row] = await tx<{ endpoint_id: string; attempts: number }[]>`
    update callback_deliveries
    set state = 'pending', finished_at = null, next_attempt_at = now()
    where id = ${deliveryId} and state <> 'pending' and payload is not null
    returning endpoint_id, attempts`;
  if (row === undefined) return false;
  await enqueueCallbackDelivery(tx, {
    tenantId,
    id: deliveryId,
    endpointId: row.endpoint_id,
    firstAttempt: row.attempts + 1,
  });
  return true;
}
