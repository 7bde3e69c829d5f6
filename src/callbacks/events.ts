import { randomUUID } from 'node:crypto';
import type { TenantSql } from '../db/tenant.ts';
import { enqueueJob } from '../jobs/queue.ts';
import type { TaskName } from '../jobs/tasks.ts';
import type { CallbackEventType } from './endpoints.ts';

// Emitting a thread event (RLY-7, OPS-2): one `callback_fanout` job, enqueued
// in the transaction that writes the event, keyed by the event's new id. It
// commits or rolls back with the message, close or revoke; fanout.ts then
// finds the endpoints that want it. Emission does not look for endpoints
// itself: the caller's side is in another tenant, which this transaction
// (bound to the thread's) cannot read, and one add_job is the whole cost.

export const CALLBACK_FANOUT_TASK = 'callback_fanout' satisfies TaskName;

export interface ThreadEvent {
  readonly type: CallbackEventType;
  readonly threadId: string;
  readonly messageId?: string | undefined;
}

/** Enqueues the fan-out of one event of a thread of `tenantId` (the thread's tenant) in `tx`; returns the event id. */
export async function emitThreadEvent(tx: TenantSql, tenantId: string, event: ThreadEvent): Promise<string> {
  const eventId = randomUUID();
  await enqueueJob(
    tx,
    CALLBACK_FANOUT_TASK,
    {
      tenant_id: tenantId,
      event_id: eventId,
      type: event.type,
      thread_id: event.threadId,
      // The event's own time: the fan-out may run later, and the payload's timestamp is when it happened.
      occurred_at: new Date().toISOString(),
      ...(event.messageId === undefined ? {} : { message_id: event.messageId }),
    },
    { jobKey: `${CALLBACK_FANOUT_TASK}:${eventId}` },
  );
  return eventId;
}
