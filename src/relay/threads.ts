import type { Sql } from 'postgres';
import { authorize } from '../accounts/roles.ts';
import type { Principal } from '../accounts/service.ts';
import { emitThreadEvent } from '../callbacks/events.ts';
import { withLookup } from '../db/lookup.ts';
import type { TenantSql } from '../db/tenant.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import { enqueueJob } from '../jobs/queue.ts';
import type { TaskName } from '../jobs/tasks.ts';
import { hashToken, mintToken, tokenKind } from '../tokens.ts';
import type { RelayGrant } from './connections.ts';
import { RelayError } from './errors.ts';

// Threads: what a relay token opens with its target agent (migration 0019).
// A thread and its messages live in the target's tenant; every function here
// takes a transaction bound to it. The data plane binds it from a resolved
// relay token (RelayGrant.targetTenantId) or thread token; the owner's pages
// from the session.
//
// Who may do what (RLY-3, RLY-4):
//   relay token (the caller):   start a thread, post follow-ups
//   thread token (60 minutes):  read the thread and close it; the owner's
//                               token also answers in it
//   the owner's session:        the same as an owner's thread token
// A caller message is delivered to the target's instance by the
// `relay_deliver` job enqueued in the transaction that writes it (OPS-2).

export type ThreadState = 'open' | 'closed' | 'revoked';
export type MessageAuthor = 'caller' | 'agent' | 'owner';
export type Delivery = 'queued' | 'delivered' | 'failed';
export type ThreadTokenHolder = 'owner' | 'participant';

/** The largest message body, in UTF-8 bytes; larger is refused with 413 before anything is written. */
export const MAX_MESSAGE_BYTES = 32 * 1024;
export const THREAD_TOKEN_MINUTES = 60;
export const RELAY_DELIVER_TASK = 'relay_deliver' satisfies TaskName;
/** Tries of one delivery (graphile-worker's backoff: about 10 minutes in all); the message stays queued after. */
export const RELAY_DELIVER_ATTEMPTS = 6;

export interface Thread {
  readonly id: string;
  readonly connection_id: string;
  readonly agent_id: string;
  /** The requesting agent's handle; null: a person. */
  readonly requester_handle: string | null;
  readonly state: ThreadState;
  readonly message_count: number;
  readonly payload_bytes: number;
  readonly created_at: Date;
  readonly updated_at: Date;
  readonly closed_at: Date | null;
}

export interface RelayMessage {
  readonly id: string;
  readonly thread_id: string;
  readonly seq: number;
  readonly author: MessageAuthor;
  /** Null once retention deleted the payload (RLY-9); payload_deleted_at then says when. */
  readonly body: string | null;
  readonly body_bytes: number;
  /** Caller messages only. */
  readonly delivery: Delivery | null;
  readonly reply_to: string | null;
  readonly created_at: Date;
  readonly delivered_at: Date | null;
  readonly payload_deleted_at: Date | null;
}

export interface ThreadAccess {
  readonly tenantId: string;
  readonly threadId: string;
  readonly holder: ThreadTokenHolder;
  /** The user who minted the token: the owner's author id for an answer. */
  readonly mintedBy: string;
}

const THREAD_COLUMNS =
  'id, connection_id, agent_id, requester_handle, state, message_count, ' +
  'payload_bytes::int8 as payload_bytes, created_at, updated_at, closed_at';
const MESSAGE_COLUMNS =
  'id, thread_id, seq, author, body, body_bytes, delivery, reply_to, created_at, delivered_at, payload_deleted_at';

/** One answer for a thread that is not there and one the caller may not see (RLY-2, TEN-1). */
const noSuchThread = () => new RelayError('not_found', 'no such thread');

/** What is wrong with a message body, by field; undefined when nothing. Needs no database. */
export function messageProblem(text: unknown, field = 'text'): RelayError | undefined {
  if (typeof text !== 'string') return new RelayError('validation_failed', 'must be a string', field);
  if (text.trim().length === 0) return new RelayError('validation_failed', 'must not be empty', field);
  if (Buffer.byteLength(text, 'utf8') > MAX_MESSAGE_BYTES) {
    return new RelayError('message_too_large', `must be at most ${MAX_MESSAGE_BYTES} bytes of UTF-8`, field);
  }
  return undefined;
}

function checkedBody(text: string): string {
  const problem = messageProblem(text);
  if (problem !== undefined) throw problem;
  return text;
}

/**
 * Holds the grant for the rest of the transaction: its incoming row must still
 * be approved with this token, and is share-locked, so a revoke committing
 * meanwhile waits for this write and then marks its thread revoked (RLY-3).
 * The target's card must still be published, as /a2a/:handle requires (RLY-1):
 * an unpublished agent takes no new thread or message by REST either, with the
 * answer an unknown handle gets. Its row is share-locked too, so an unpublish
 * waits for a write already past this check. Reads and closes by thread token
 * do not come here: a thread already held stays readable by its holders.
 */
async function holdGrant(tx: TenantSql, grant: RelayGrant): Promise<void> {
  const [held] = await tx<{ held: boolean }[]>`
    select enclave.relay_grant_hold(${grant.connectionId}::uuid) as held`;
  const [published] = await tx`
    select 1 from agents where ${boundTenant(tx)} and id = ${grant.targetAgentId}::uuid and card_published
    for share`;
  if (held?.held !== true || published === undefined) throw new RelayError('not_found', 'no such agent');
}

async function appendMessage(
  tx: TenantSql,
  threadId: string,
  message: { author: MessageAuthor; body: string; authorUserId?: string; replyTo?: string },
): Promise<{ message: RelayMessage; thread: Thread }> {
  const bytes = Buffer.byteLength(message.body, 'utf8');
  // The thread row's update takes its lock, so seq (the new message_count) is handed out one at a time.
  const [thread] = await tx<Thread[]>`
    update relay_threads set message_count = message_count + 1, payload_bytes = payload_bytes + ${bytes},
      updated_at = now()
    where ${boundTenant(tx)} and id = ${threadId}::uuid
    returning ${tx.unsafe(THREAD_COLUMNS)}`;
  if (thread === undefined) throw noSuchThread();
  const [row] = await tx<(RelayMessage & { tenant_id: string })[]>`
    insert into relay_messages (tenant_id, thread_id, seq, author, author_user_id, reply_to, body, body_bytes, delivery)
    values (enclave.current_tenant_id(), ${threadId}::uuid, ${thread.message_count}, ${message.author},
            ${message.authorUserId ?? null}::uuid, ${message.replyTo ?? null}::uuid, ${message.body}, ${bytes},
            ${message.author === 'caller' ? 'queued' : null})
    returning tenant_id, ${tx.unsafe(MESSAGE_COLUMNS)}`;
  if (row === undefined) throw new Error('insert returned no row');
  const { tenant_id: tenantId, ...written } = row;
  if (message.author === 'caller') await enqueueDelivery(tx, tenantId, threadId, written.id);
  // Callbacks (RLY-7): the caller's message is received; an agent's or owner's is the reply.
  await emitThreadEvent(tx, tenantId, {
    type: message.author === 'caller' ? 'thread.message_received' : 'thread.agent_replied',
    threadId,
    messageId: written.id,
  });
  return { message: written, thread };
}

/** The delivery job of one caller message: keyed by the message, so enqueueing it again never doubles it. */
export async function enqueueDelivery(
  tx: TenantSql,
  tenantId: string,
  threadId: string,
  messageId: string,
): Promise<void> {
  // One queue per thread: its messages reach the agent in the order written.
  await enqueueJob(
    tx,
    RELAY_DELIVER_TASK,
    { tenant_id: tenantId, message_id: messageId },
    {
      jobKey: `${RELAY_DELIVER_TASK}:${messageId}`,
      queue: `relay:${threadId}`,
      maxAttempts: RELAY_DELIVER_ATTEMPTS,
    },
  );
}

/** RLY-2/RLY-3: a new thread with its first caller message, for a held grant. */
export async function startThread(
  tx: TenantSql,
  grant: RelayGrant,
  text: string,
): Promise<{ thread: Thread; message: RelayMessage }> {
  const body = checkedBody(text);
  await holdGrant(tx, grant);
  const [created] = await tx<{ id: string }[]>`
    insert into relay_threads (tenant_id, connection_id, agent_id, requester_handle)
    values (enclave.current_tenant_id(), ${grant.connectionId}::uuid, ${grant.targetAgentId}::uuid,
            ${grant.requesterHandle})
    returning id`;
  if (created === undefined) throw new Error('insert returned no row');
  return appendMessage(tx, created.id, { author: 'caller', body });
}

/** A follow-up from the caller, in an open thread of the same grant. */
export async function postCallerMessage(
  tx: TenantSql,
  grant: RelayGrant,
  threadId: string,
  text: string,
): Promise<RelayMessage> {
  const body = checkedBody(text);
  await holdGrant(tx, grant);
  const thread = await lockedThread(tx, threadId);
  // Another grant's thread is as unknown as a missing one.
  if (thread === undefined || thread.connection_id !== grant.connectionId) throw noSuchThread();
  requireOpen(thread);
  return (await appendMessage(tx, threadId, { author: 'caller', body })).message;
}

/** The owner's answer (an owner thread token or the owner's session; RLY-4). */
export async function postOwnerMessage(
  tx: TenantSql,
  threadId: string,
  userId: string,
  text: string,
): Promise<RelayMessage> {
  const body = checkedBody(text);
  const thread = await lockedThread(tx, threadId);
  if (thread === undefined) throw noSuchThread();
  requireOpen(thread);
  return (await appendMessage(tx, threadId, { author: 'owner', body, authorUserId: userId })).message;
}

/**
 * The target agent's answer to caller message `messageId`, recorded once:
 * a retried delivery finds the first answer and writes nothing. Undefined
 * when the thread is no longer open (the answer is dropped, not kept).
 */
export async function recordAgentAnswer(
  tx: TenantSql,
  threadId: string,
  messageId: string,
  text: string,
): Promise<RelayMessage | undefined> {
  const thread = await lockedThread(tx, threadId);
  if (thread === undefined || thread.state !== 'open') return undefined;
  const [existing] = await tx<RelayMessage[]>`
    select ${tx.unsafe(MESSAGE_COLUMNS)} from relay_messages
    where ${boundTenant(tx)} and reply_to = ${messageId}::uuid`;
  if (existing !== undefined) return existing;
  return (await appendMessage(tx, threadId, { author: 'agent', body: text, replyTo: messageId })).message;
}

export async function closeThread(tx: TenantSql, threadId: string): Promise<Thread> {
  const thread = await lockedThread(tx, threadId);
  if (thread === undefined) throw noSuchThread();
  if (thread.state === 'closed') return thread;
  requireOpen(thread);
  const [closed] = await tx<{ tenant_id: string }[]>`
    update relay_threads set state = 'closed', closed_at = now(), updated_at = now()
    where ${boundTenant(tx)} and id = ${threadId}::uuid
    returning tenant_id`;
  if (closed !== undefined) await emitThreadEvent(tx, closed.tenant_id, { type: 'thread.closed', threadId });
  return getThread(tx, threadId);
}

/**
 * RLY-3: revoking a connection marks every open thread of it revoked; in the revoke's transaction.
 * Each such thread emits its own `connection.revoked` callback event (RLY-7), with its thread_id: a
 * receiver keyed on threads learns which ones ended. The revoke itself emits one more, of the
 * connection alone (decideConnection), so a connection with no open thread is heard of too.
 */
export async function revokeConnectionThreads(tx: TenantSql, connectionId: string): Promise<number> {
  const revoked = await tx<{ id: string; tenant_id: string }[]>`
    update relay_threads set state = 'revoked', closed_at = now(), updated_at = now()
    where ${boundTenant(tx)} and connection_id = ${connectionId}::uuid and state = 'open'
    returning id, tenant_id`;
  for (const thread of revoked) {
    await emitThreadEvent(tx, thread.tenant_id, { type: 'connection.revoked', threadId: thread.id });
  }
  return revoked.length;
}

function requireOpen(thread: Thread): void {
  if (thread.state !== 'open') {
    throw new RelayError('thread_state', `the thread is ${thread.state}: it takes no more messages`);
  }
}

async function lockedThread(tx: TenantSql, threadId: string): Promise<Thread | undefined> {
  const [row] = await tx<Thread[]>`
    select ${tx.unsafe(THREAD_COLUMNS)} from relay_threads
    where ${boundTenant(tx)} and id = ${threadId}::uuid for update`;
  return row;
}

export async function getThread(tx: TenantSql, threadId: string): Promise<Thread> {
  const [row] = await tx<Thread[]>`
    select ${tx.unsafe(THREAD_COLUMNS)} from relay_threads where ${boundTenant(tx)} and id = ${threadId}::uuid`;
  if (row === undefined) throw noSuchThread();
  return row;
}

/** A page of the thread's messages in the order written, keyed by seq. */
export const listMessages = (
  tx: TenantSql,
  threadId: string,
  page: { afterSeq: number; limit: number },
): Promise<RelayMessage[]> =>
  tx<RelayMessage[]>`
    select ${tx.unsafe(MESSAGE_COLUMNS)} from relay_messages
    where ${boundTenant(tx)} and thread_id = ${threadId}::uuid and seq > ${page.afterSeq}
    order by seq limit ${page.limit + 1}::int4`;

/** A page of the tenant's threads (the target's side), most recently active first. */
export const listThreads = (
  tx: TenantSql,
  page: PageRequest,
  filter: { agentId?: string | undefined } = {},
): Promise<(Thread & PositionedRow)[]> =>
  tx<(Thread & PositionedRow)[]>`
    select ${tx.unsafe(THREAD_COLUMNS)}, ${positionColumns(tx, 'updated_at')} from relay_threads
    where ${boundTenant(tx)} ${filter.agentId === undefined ? tx`` : tx`and agent_id = ${filter.agentId}::uuid`}
      ${afterPosition(tx, 'updated_at', 'desc', page.after)}
    order by updated_at desc, id desc limit ${page.limit + 1}::int4`;

/** Throws unless the principal answers for the thread's agent as its owner would (relay.approve, as for connections). */
export async function authorizeThreadOwner(
  tx: TenantSql,
  principal: Principal,
  threadId: string,
): Promise<Thread> {
  const [row] = await tx<(Thread & { agent_created_by: string | null })[]>`
    select ${tx.unsafe(THREAD_COLUMNS)}, (
      select a.created_by from agents a where a.tenant_id = relay_threads.tenant_id and a.id = relay_threads.agent_id
    ) as agent_created_by
    from relay_threads where ${boundTenant(tx)} and id = ${threadId}::uuid`;
  if (row === undefined) throw noSuchThread();
  authorize(principal, 'relay.approve', row.agent_created_by);
  return row;
}

/**
 * RLY-4: a thread access token for the signed-in principal, valid 60
 * minutes. From the thread's own tenant it is an owner's token (relay.approve
 * on its agent); from the requester's tenant, a participant's, for the user
 * who asked for the connection. Any other thread is not found. `tx` is bound
 * to the principal's tenant. The token is returned here only.
 */
export async function mintThreadToken(
  tx: TenantSql,
  principal: Principal,
  threadId: string,
): Promise<{ token: string; holder: ThreadTokenHolder; expires_at: Date }> {
  const minted = mintToken('thread');
  const hash = minted.hash.toString('hex');
  minted.hash.fill(0);
  const [own] = await tx`select 1 from relay_threads where ${boundTenant(tx)} and id = ${threadId}::uuid`;
  if (own !== undefined) {
    await authorizeThreadOwner(tx, principal, threadId);
    const [row] = await tx<{ expires_at: Date }[]>`
      insert into relay_thread_tokens (tenant_id, thread_id, holder, minted_by, token_hash, expires_at)
      values (enclave.current_tenant_id(), ${threadId}::uuid, 'owner', ${principal.user.id}::uuid, ${hash},
              now() + make_interval(mins => ${THREAD_TOKEN_MINUTES}))
      returning expires_at`;
    if (row === undefined) throw new Error('insert returned no row');
    return { token: minted.token, holder: 'owner', expires_at: row.expires_at };
  }
  // The requester's side: the thread is in another tenant, reached only through the definer function.
  const [issued] = await tx<{ outcome: string; expires_at: Date | null }[]>`
    select outcome, expires_at from enclave.relay_thread_token_issue(
      ${threadId}::uuid, ${principal.user.id}::uuid, ${hash})`;
  if (issued?.outcome !== 'ok' || issued.expires_at === null) throw noSuchThread();
  return { token: minted.token, holder: 'participant', expires_at: issued.expires_at };
}

/**
 * What a thread token opens, or undefined: not a thread token, unknown, or
 * expired (fail closed). Attacker-controlled: only hashed, then bound.
 */
export async function resolveThreadToken(sql: Sql, token: string): Promise<ThreadAccess | undefined> {
  if (tokenKind(token) !== 'thread') return undefined;
  const hash = hashToken(token).toString('hex');
  const [row] = await withLookup(
    sql,
    hash,
    (tx) => tx<ThreadAccess[]>`
      select tenant_id as "tenantId", thread_id as "threadId", holder, minted_by as "mintedBy"
      from relay_thread_tokens
      where token_hash = ${hash} and expires_at > now()`,
  );
  return row;
}
