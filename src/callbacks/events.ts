import { randomUUID } from 'node:crypto';
import type { TenantSql } from '../db/tenant.ts';
import { enqueueJob } from '../jobs/queue.ts';
import type { TaskName } from '../jobs/tasks.ts';
import type { CallbackEventType } from './endpoints.ts';

// Emitting a thread event, or a connection's own (its revoke), for callbacks
// (RLY-7, OPS-2): one `callback_fanout` job, enqueued in the transaction that
// writes the event, keyed by the event's new id. It commits or rolls back
// with the message, close or revoke; fanout.ts then
// finds the endpoints that want it. Emission does not look for endpoints
// itself: the caller's side is in another tenant, which this transaction
// (bound to the thread's or connection's target tenant) cannot read, and one
// add_job is the whole cost.

export const CALLBACK_FANOUT_TASK = 'callback_fanout' satisfies TaskName;

export interface ThreadEvent {
  readonly type: CallbackEventType;
  readonly threadId: string;
  readonly messageId?: string | undefined;
}

/** An event of a connection itself, not of one thread: a revoke reaches subscribers even with no thread open. */
export interface ConnectionEvent {
  readonly type: 'connection.revoked';
  readonly connectionId: string;
}

/** Enqueues the fan-out of one event of a thread of `tenantId` (the thread's tenant) in `tx`; returns the event id. */
export function emitThreadEvent(tx: TenantSql, tenantId: string, event: ThreadEvent): Promise<string> {
  return enqueueFanout(tx, tenantId, event.type, {
    thread_id: event.threadId,
    ...(event.messageId === undefined ? {} : { message_id: event.messageId }),
  });
}

/** Enqueues the fan-out of one event of a connection (`tenantId`: the target's, the incoming row's) in `tx`; returns the event id. */
export function emitConnectionEvent(
  tx: TenantSql,
  tenantId: string,
  event: ConnectionEvent,
): Promise<string> {
  return enqueueFanout(tx, tenantId, event.type, { connection_id: event.connectionId });
}

async function enqueueFanout(
  tx: TenantSql,
  tenantId: string,
  type: CallbackEventType,
  subject: { thread_id: string; message_id?: string } | { connection_id: string },
): Promise<string> {
  const eventId = randomUUID();
  await enqueueJob(
    tx,
    CALLBACK_FANOUT_TASK,
    {
      tenant_id: tenantId,
      event_id: eventId,
      type,
      ...subject,
      // The event's own time: the fan-out may run later, and the payload's timestamp is when it happened.
      occurred_at: new Date().toISOString(),
    },
    { jobKey: `${CALLBACK_FANOUT_TASK}:${eventId}` },
  );
  return eventId;
}
