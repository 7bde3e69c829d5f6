import { Type } from 'typebox';
import { Id, NullableTimestamp, Timestamp } from '../http/schemas.ts';
import { MAX_MESSAGE_BYTES, type RelayMessage, type Thread } from './threads.ts';

// What a thread and its messages look like over HTTP: the response schemas
// (allowlists) and the functions that build those views from the rows. The
// caller's view of a thread names nothing of the target's tenant (no agent
// or connection id); the owner's adds them.

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) =>
  Type.Union([schema, Type.Null()]);

const ThreadState = Type.Union([Type.Literal('open'), Type.Literal('closed'), Type.Literal('revoked')], {
  description: 'open; closed by a participant or the owner; revoked with its connection (RLY-3)',
});

const threadFields = {
  id: Id,
  state: ThreadState,
  message_count: Type.Integer(),
  created_at: Timestamp,
  updated_at: Timestamp,
  closed_at: NullableTimestamp,
};

export const ThreadSchema = Type.Object(threadFields, { description: 'A relay thread' });

export const OwnerThreadSchema = Type.Object(
  {
    ...threadFields,
    agent_id: Id,
    connection_id: Id,
    requester_handle: Nullable(Type.String({ description: 'The asking agent; null: a person' })),
    payload_bytes: Type.Integer({ description: 'UTF-8 bytes of every message body written' }),
  },
  { description: 'A relay thread with one of your agents' },
);

export const MessageSchema = Type.Object(
  {
    id: Id,
    seq: Type.Integer({ description: 'Its place in the thread, from 1' }),
    author: Type.Union([Type.Literal('caller'), Type.Literal('agent'), Type.Literal('owner')]),
    body: Nullable(
      Type.String({ description: `The text, at most ${MAX_MESSAGE_BYTES} bytes; null once payload_expired` }),
    ),
    payload_expired: Type.Boolean({
      description: 'true when retention deleted the body (RLY-9: 30 days); the metadata stays',
    }),
    body_bytes: Type.Integer(),
    delivery: Nullable(
      Type.Union([Type.Literal('queued'), Type.Literal('delivered'), Type.Literal('failed')], {
        description: "Caller messages: whether it reached the agent's instance",
      }),
    ),
    reply_to: Nullable(Id),
    created_at: Timestamp,
    delivered_at: NullableTimestamp,
  },
  { description: 'A message of a relay thread' },
);

export const threadView = (thread: Thread) => ({
  id: thread.id,
  state: thread.state,
  message_count: thread.message_count,
  created_at: thread.created_at,
  updated_at: thread.updated_at,
  closed_at: thread.closed_at,
});

export const ownerThreadView = (thread: Thread) => ({
  ...threadView(thread),
  agent_id: thread.agent_id,
  connection_id: thread.connection_id,
  requester_handle: thread.requester_handle,
  payload_bytes: thread.payload_bytes,
});

export const messageView = (message: RelayMessage) => ({
  id: message.id,
  seq: message.seq,
  author: message.author,
  body: message.payload_deleted_at === null ? message.body : null,
  payload_expired: message.payload_deleted_at !== null,
  body_bytes: message.body_bytes,
  delivery: message.delivery,
  reply_to: message.reply_to,
  created_at: message.created_at,
  delivered_at: message.delivered_at,
});
