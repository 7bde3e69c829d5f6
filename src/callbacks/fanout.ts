import { randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import { isUuid, serviceQuery, type TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { boundTenant } from '../http/page-cursor.ts';
import { enqueueCallbackDelivery } from './deliver.ts';
import { CALLBACK_EVENT_TYPES, type CallbackEventType } from './endpoints.ts';

// The `callback_fanout` job (RLY-7): one thread event, or one event of a
// connection itself (its revoke, with no thread_id: events.ts), becomes one
// delivery per enabled endpoint that wants its type, on both sides:
//   the thread's tenant:    owner-side endpoints of the thread's agent;
//   the requester's tenant: caller-side endpoints of the connection (the
//                           outgoing row shares the incoming row's id).
// Each side is its own serviceQuery (TEN-5), and each delivery's
// `callback_deliver` job (deliver.ts) is enqueued in the transaction that
// inserts it, keyed by the delivery. Re-running the job finds the
// (endpoint, event) rows already there and adds nothing.
//
// What a caller sees: the payload holds only what the caller's own thread
// token already shows (the thread, the connection, the target's public handle,
// the message's author kind and text); never a user, nor either tenant's id.

/** callback_deliveries.payload's bound (migration 0025). */
export const MAX_PAYLOAD_BYTES = 65536;

export type FanoutErrorCode = 'callback_fanout_payload_invalid';

interface FanoutEvent {
  readonly tenantId: string;
  readonly eventId: string;
  readonly type: CallbackEventType;
  /** The event's subject: a thread, or (a connection-level event) the connection alone. */
  readonly subject: { readonly threadId: string } | { readonly connectionId: string };
  readonly messageId: string | undefined;
  readonly occurredAt: string;
}

/** The JSON body every endpoint of the event receives (README "Callbacks"). */
export interface CallbackPayload {
  readonly type: CallbackEventType;
  readonly timestamp: string;
  readonly data: {
    /** Absent in a connection-level event (a revoke sent once for the connection, open threads or not). */
    readonly thread_id?: string;
    readonly connection_id: string;
    readonly agent_handle: string;
    readonly state: string;
    readonly message_id?: string;
    readonly author?: string;
    readonly text?: string;
    /** Set when the text would not fit the payload's 64 KB. */
    readonly text_omitted?: true;
  };
}

/** The job's payload is JSON read back from the job table: checked field by field. */
function parseEvent(payload: unknown): FanoutEvent {
  const p = (payload ?? {}) as Record<string, unknown>;
  const invalid = (field: string) =>
    new AppError<FanoutErrorCode>('callback_fanout_payload_invalid', `callback_fanout: bad ${field}`);
  if (!isUuid(p.tenant_id)) throw invalid('tenant_id');
  if (!isUuid(p.event_id)) throw invalid('event_id');
  if (!CALLBACK_EVENT_TYPES.includes(p.type as CallbackEventType)) throw invalid('type');
  // Exactly one subject; a connection's own event is only its revoke, and has no message.
  const connectionLevel =
    p.thread_id === undefined && p.type === 'connection.revoked' && p.message_id === undefined;
  if (connectionLevel ? !isUuid(p.connection_id) : !isUuid(p.thread_id) || p.connection_id !== undefined)
    throw invalid(connectionLevel ? 'connection_id' : 'thread_id');
  if (p.message_id !== undefined && !isUuid(p.message_id)) throw invalid('message_id');
  if (typeof p.occurred_at !== 'string' || Number.isNaN(Date.parse(p.occurred_at)))
    throw invalid('occurred_at');
  return {
    tenantId: p.tenant_id,
    eventId: p.event_id,
    type: p.type as CallbackEventType,
    subject: isUuid(p.thread_id) ? { threadId: p.thread_id } : { connectionId: String(p.connection_id) },
    messageId: p.message_id,
    occurredAt: new Date(p.occurred_at).toISOString(),
  };
}

/** Creates the deliveries of one thread or connection event; idempotent. */
export async function fanoutCallbackEvent(sql: Sql, payload: unknown): Promise<void> {
  const event = parseEvent(payload);
  const found = await serviceQuery(
    sql,
    { tenantId: event.tenantId, reason: 'callbacks: fan out a relay event (owner side)' },
    async (tx) => {
      const read =
        'threadId' in event.subject
          ? await readThreadEvent(tx, event, event.subject.threadId)
          : await readConnectionEvent(tx, event, event.subject.connectionId);
      if (read === undefined) return undefined;
      await deliverTo(tx, event.tenantId, event, read.body, tx`agent_id = ${read.agentId}::uuid`);
      return read;
    },
  );
  // The thread or connection is gone (its agent deleted): nobody to tell.
  if (found === undefined) return;
  await serviceQuery(
    sql,
    { tenantId: found.peerTenantId, reason: 'callbacks: fan out a relay event (caller side)' },
    (tx) =>
      deliverTo(tx, found.peerTenantId, event, found.body, tx`connection_id = ${found.connectionId}::uuid`),
  );
}

interface ReadEvent {
  readonly agentId: string;
  readonly connectionId: string;
  readonly peerTenantId: string;
  readonly body: string;
}

/** A connection-level event: the connection's incoming row (target's side) with its agent's public handle. */
async function readConnectionEvent(
  tx: TenantSql,
  event: FanoutEvent,
  connectionId: string,
): Promise<ReadEvent | undefined> {
  const [connection] = await tx<
    { agent_id: string; state: string; handle: string; peer_tenant_id: string }[]
  >`
    select c.agent_id, c.state, a.handle, c.peer_tenant_id
    from relay_connections c
    join agents a on a.tenant_id = c.tenant_id and a.id = c.agent_id
    where ${boundTenant(tx, tx`c.tenant_id`)} and c.id = ${connectionId}::uuid and c.side = 'incoming'`;
  if (connection === undefined) return undefined;
  const body: CallbackPayload = {
    type: event.type,
    timestamp: event.occurredAt,
    data: { connection_id: connectionId, agent_handle: connection.handle, state: connection.state },
  };
  return {
    agentId: connection.agent_id,
    connectionId,
    peerTenantId: connection.peer_tenant_id,
    body: JSON.stringify(body),
  };
}

/** A thread event: the thread, its connection and agent, and the message when the event names one. */
async function readThreadEvent(
  tx: TenantSql,
  event: FanoutEvent,
  threadId: string,
): Promise<ReadEvent | undefined> {
  const [thread] = await tx<
    { connection_id: string; agent_id: string; state: string; handle: string; peer_tenant_id: string }[]
  >`
    select t.connection_id, t.agent_id, t.state, a.handle, c.peer_tenant_id
    from relay_threads t
    join agents a on a.tenant_id = t.tenant_id and a.id = t.agent_id
    join relay_connections c on c.tenant_id = t.tenant_id and c.id = t.connection_id and c.side = 'incoming'
    where ${boundTenant(tx, tx`t.tenant_id`)} and t.id = ${threadId}::uuid`;
  if (thread === undefined) return undefined;
  let message: { author: string; body: string | null } | undefined;
  if (event.messageId !== undefined) {
    [message] = await tx<{ author: string; body: string | null }[]>`
      select author, body from relay_messages
      where ${boundTenant(tx)} and thread_id = ${threadId}::uuid and id = ${event.messageId}::uuid`;
  }
  const body: CallbackPayload = {
    type: event.type,
    timestamp: event.occurredAt,
    data: {
      thread_id: threadId,
      connection_id: thread.connection_id,
      agent_handle: thread.handle,
      state: thread.state,
      ...(event.messageId === undefined ? {} : { message_id: event.messageId }),
      ...(message === undefined ? {} : { author: message.author }),
      // Null once retention deleted it (RLY-9): then the event carries no text.
      ...(message?.body == null ? {} : { text: message.body }),
    },
  };
  let text = JSON.stringify(body);
  // A 32 KB message of characters JSON escapes sixfold would pass the column's bound: then without its text.
  if (Buffer.byteLength(text, 'utf8') > MAX_PAYLOAD_BYTES) {
    const { text: _dropped, ...data } = body.data;
    text = JSON.stringify({ ...body, data: { ...data, text_omitted: true } });
  }
  return {
    agentId: thread.agent_id,
    connectionId: thread.connection_id,
    peerTenantId: thread.peer_tenant_id,
    body: text,
  };
}

/** One delivery (and its job) per enabled endpoint of this tenant matching `subject` that wants the type. */
async function deliverTo(
  tx: TenantSql,
  tenantId: string,
  event: FanoutEvent,
  body: string,
  subject: ReturnType<TenantSql>,
): Promise<void> {
  const endpoints = await tx<{ id: string }[]>`
    select id from callback_endpoints
    where ${boundTenant(tx)} and ${subject} and state = 'enabled' and ${event.type} = any(event_types)`;
  for (const endpoint of endpoints) {
    const id = randomUUID();
    const [delivery] = await tx<{ id: string }[]>`
      insert into callback_deliveries (id, tenant_id, endpoint_id, event_id, event_type, webhook_id, payload)
      values (${id}::uuid, enclave.current_tenant_id(), ${endpoint.id}::uuid, ${event.eventId}::uuid, ${event.type},
              ${`msg_${id.replaceAll('-', '')}`}, ${body})
      on conflict (endpoint_id, event_id) do nothing
      returning id`;
    if (delivery === undefined) continue;
    await enqueueCallbackDelivery(tx, { tenantId, id: delivery.id, endpointId: endpoint.id });
  }
}
