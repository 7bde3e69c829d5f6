import type { Principal } from '../accounts/service.ts';
import type { TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import { replayDelivery } from './deliver.ts';
import { authorizeSubject } from './endpoints.ts';

// The delivery log of a callback endpoint (RLY-7): its deliveries, newest
// first, each with its attempts, and replay — one delivery, or every failed
// one since a time — as a new attempt series with the same webhook-id.
//
// Who may: whoever may manage the endpoint. Owner side (agent_id): relay.approve
// on the agent (owner, admin, the agent's creator). Caller side
// (connection_id): the user who asked for the connection, or an owner/admin —
// relay.approve's own rule (member: own) with the requester as the "creator".
// Another tenant's endpoint or delivery is not_found (RLS hides it).

export type DeliveryLogErrorCode = 'not_found';

const noSuchEndpoint = () => new AppError<DeliveryLogErrorCode>('not_found', 'no such webhook endpoint');
const noSuchDelivery = () => new AppError<DeliveryLogErrorCode>('not_found', 'no such webhook delivery');

export interface DeliverySummary {
  readonly id: string;
  readonly endpoint_id: string;
  readonly event_type: string;
  readonly webhook_id: string;
  readonly state: 'pending' | 'succeeded' | 'failed';
  readonly attempts: number;
  readonly last_status: number | null;
  readonly next_attempt_at: Date | null;
  readonly created_at: Date;
  readonly finished_at: Date | null;
  /** The payload's size in bytes, also after it expired. */
  readonly payload_bytes: number;
  /** When relay retention removed the payload and the answers' excerpts (RLY-9); null while they are kept. */
  readonly payload_deleted_at: Date | null;
}

export interface DeliveryAttempt {
  readonly number: number;
  readonly attempted_at: Date;
  readonly status: number | null;
  readonly latency_ms: number;
  readonly error: string | null;
  readonly response_prefix: string | null;
}

export interface DeliveryDetail extends DeliverySummary {
  /** Null once expired (payload_deleted_at says when). */
  readonly payload: string | null;
  readonly attempt_log: DeliveryAttempt[];
}

const SUMMARY = `id, endpoint_id, event_type, webhook_id, state, attempts, last_status, next_attempt_at,
  created_at, finished_at, coalesce(payload_bytes, octet_length(payload)) as payload_bytes, payload_deleted_at`;

/** Throws not_found / forbidden unless the principal may manage the endpoint (the rule of endpoints.ts). */
export async function authorizeEndpoint(
  tx: TenantSql,
  principal: Principal,
  endpointId: string,
): Promise<void> {
  const [row] = await tx<{ agent_id: string | null; connection_id: string | null }[]>`
    select agent_id, connection_id from callback_endpoints where ${boundTenant(tx)} and id = ${endpointId}::uuid`;
  if (row === undefined) throw noSuchEndpoint();
  await authorizeSubject(tx, principal, { agentId: row.agent_id, connectionId: row.connection_id });
}

/** A page of the endpoint's deliveries, newest first, keyed by (created_at, id). */
export async function listDeliveries(
  tx: TenantSql,
  principal: Principal,
  endpointId: string,
  page: PageRequest,
): Promise<(DeliverySummary & PositionedRow)[]> {
  await authorizeEndpoint(tx, principal, endpointId);
  return tx<(DeliverySummary & PositionedRow)[]>`
    select ${tx.unsafe(SUMMARY)}, ${positionColumns(tx, 'created_at')} from callback_deliveries
    where ${boundTenant(tx)} and endpoint_id = ${endpointId}::uuid
      ${afterPosition(tx, 'created_at', 'desc', page.after)}
    order by created_at desc, id desc limit ${page.limit + 1}::int4`;
}

async function endpointOf(tx: TenantSql, principal: Principal, deliveryId: string): Promise<string> {
  const [row] = await tx<{ endpoint_id: string }[]>`
    select endpoint_id from callback_deliveries where id = ${deliveryId}::uuid and ${boundTenant(tx)}`;
  if (row === undefined) throw noSuchDelivery();
  await authorizeEndpoint(tx, principal, row.endpoint_id);
  return row.endpoint_id;
}

/** One delivery with its exact payload and every attempt, oldest first. */
export async function getDelivery(
  tx: TenantSql,
  principal: Principal,
  deliveryId: string,
): Promise<DeliveryDetail> {
  await endpointOf(tx, principal, deliveryId);
  const [row] = await tx<(DeliverySummary & { payload: string | null })[]>`
    select ${tx.unsafe(SUMMARY)}, payload from callback_deliveries where id = ${deliveryId}::uuid`;
  if (row === undefined) throw noSuchDelivery();
  const attempts = await tx<DeliveryAttempt[]>`
    select number, attempted_at, status, latency_ms, error, response_prefix from callback_attempts
    where delivery_id = ${deliveryId}::uuid order by number`;
  return { ...row, attempt_log: attempts };
}

/** Replays one finished delivery; false when it is still pending (its series runs) or its payload expired. */
export async function replayOne(
  tx: TenantSql,
  principal: Principal,
  tenantId: string,
  deliveryId: string,
): Promise<boolean> {
  await endpointOf(tx, principal, deliveryId);
  return replayDelivery(tx, tenantId, deliveryId);
}

/** The most failed deliveries one replay-failed call requeues: the caller pages by calling again. */
export const MAX_REPLAY_FAILED = 1000;

/** Replays the endpoint's deliveries that ended failed at or after `since` and still have their payload; returns how many. */
export async function replayFailed(
  tx: TenantSql,
  principal: Principal,
  tenantId: string,
  endpointId: string,
  since: Date,
): Promise<number> {
  await authorizeEndpoint(tx, principal, endpointId);
  const failed = await tx<{ id: string }[]>`
    select id from callback_deliveries
    where ${boundTenant(tx)} and endpoint_id = ${endpointId}::uuid and state = 'failed' and finished_at >= ${since}
      and payload is not null
    order by finished_at limit ${MAX_REPLAY_FAILED}`;
  let count = 0;
  for (const { id } of failed) if (await replayDelivery(tx, tenantId, id)) count += 1;
  return count;
}
