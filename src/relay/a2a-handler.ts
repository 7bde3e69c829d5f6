import type {
  AgentCard,
  CancelTaskRequest,
  GetTaskRequest,
  ListTaskPushNotificationConfigsResponse,
  ListTasksResponse,
  Message,
  SendMessageRequest,
  StreamResponse,
  Task,
  TaskPushNotificationConfig,
} from '@a2a-js/sdk';
import { Role, TaskState } from '@a2a-js/sdk';
import {
  ExtendedAgentCardNotConfiguredError,
  PushNotificationNotSupportedError,
  RequestMalformedError,
  TaskNotCancelableError,
  TaskNotFoundError,
  UnsupportedOperationError,
} from '@a2a-js/sdk/errors';
import type { A2ARequestHandler } from '@a2a-js/sdk/server';
import type { Sql } from 'postgres';
import { isUuid, type TenantSql, withTenant } from '../db/tenant.ts';
import { isAppError } from '../errors.ts';
import { boundTenant } from '../http/page-cursor.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { hashToken } from '../tokens.ts';
import { type RelayGrant, resolveRelayToken } from './connections.ts';
import { runIdempotent } from './idempotency.ts';
import { spendRelayPoints } from './rate-limits.ts';
import {
  closeThread,
  getThread,
  listMessages,
  postCallerMessage,
  type RelayMessage,
  resolveThreadToken,
  startThread,
  type Thread,
  type ThreadAccess,
} from './threads.ts';

// The relay's A2A request handler (RLY-2, RLY-3, RLY-4): what @a2a-js/sdk's
// JSON-RPC transport calls once it has parsed a request, for one request to
// /a2a/:handle. A thread is the A2A task and its context (task id = context
// id = thread id):
//
//   SendMessage (message/send)   relay token: no task id starts a thread, the
//                                thread's id posts a follow-up (RLY-3)
//   GetTask (tasks/get)          thread token of that thread (RLY-4)
//   CancelTask (tasks/cancel)    thread token: closes the thread (RLY-4)
//
// Streaming, resubscription and push notifications are not offered (the card
// says so): they answer the A2A "unsupported" errors. Everything that is not
// a caller's answer to have (unknown or unpublished handle, a token of another
// handle or kind, a revoked or expired token, another grant's task) is one
// TaskNotFoundError with one message (RLY-2). A rate limit, a request still
// in flight, or a fault is not a JSON-RPC answer: it is kept in `escaped` and
// the route hands it to the app's problem handler (429 with Retry-After, 409,
// or a logged 500 that names nothing).

/** The one answer for everything a request may not reach (RLY-2). */
export const NOT_FOUND_MESSAGE = 'no such agent or task';
/** The most messages a task's history carries; GetTask's historyLength may ask for fewer. */
export const MAX_TASK_HISTORY = 100;

export interface A2ACall {
  readonly handle: string;
  /** The Bearer token, if the request carried one that could be a token at all. */
  readonly token: string | undefined;
  readonly clientAddress: string;
  /** The Idempotency-Key header as sent (RLY-6); the message's messageId stands in without one. */
  readonly idempotencyKey: string | undefined;
  /** What must not become a JSON-RPC error; set at most once, read by the route after the call. */
  escaped?: unknown;
}

export interface A2AHandlerDeps {
  readonly sql: Sql;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
}

const notFound = () => new TaskNotFoundError({ message: NOT_FOUND_MESSAGE });
const malformed = (message: string) => new RequestMalformedError({ message });

function textPart(text: string) {
  return {
    content: { $case: 'text' as const, value: text },
    metadata: undefined,
    filename: '',
    mediaType: 'text/plain',
  };
}

function a2aMessage(threadId: string, message: RelayMessage): Message {
  return {
    messageId: message.id,
    contextId: threadId,
    taskId: threadId,
    role: message.author === 'caller' ? Role.ROLE_USER : Role.ROLE_AGENT,
    // RLY-9: a payload past retention is gone; the message says when it went.
    parts: [textPart(message.body ?? '')],
    metadata:
      message.body === null
        ? { payloadDeletedAt: message.payload_deleted_at?.toISOString() ?? null }
        : { author: message.author },
    extensions: [],
    referenceTaskIds: [],
  };
}

/**
 * The task's state: a closed thread is canceled (CancelTask closes it), a
 * revoked one rejected; an open one waits for input once its last message is
 * the agent's or the owner's, and is submitted (delivery queued) or working
 * (delivered) while the caller's last message is unanswered.
 */
export function taskState(thread: Thread, last: RelayMessage | undefined): TaskState {
  if (thread.state === 'closed') return TaskState.TASK_STATE_CANCELED;
  if (thread.state === 'revoked') return TaskState.TASK_STATE_REJECTED;
  if (last === undefined || last.author !== 'caller') return TaskState.TASK_STATE_INPUT_REQUIRED;
  return last.delivery === 'queued' ? TaskState.TASK_STATE_SUBMITTED : TaskState.TASK_STATE_WORKING;
}

/** The thread as an A2A task; `recent` are its latest messages in order, `history` how many of them to show. */
export function threadTask(thread: Thread, recent: RelayMessage[], history = recent.length): Task {
  const last = recent.at(-1);
  const state = taskState(thread, last);
  return {
    id: thread.id,
    contextId: thread.id,
    status: {
      state,
      message:
        state === TaskState.TASK_STATE_INPUT_REQUIRED && last !== undefined
          ? a2aMessage(thread.id, last)
          : undefined,
      timestamp: thread.updated_at.toISOString(),
    },
    artifacts: [],
    history: history === 0 ? [] : recent.slice(-history).map((message) => a2aMessage(thread.id, message)),
    metadata: undefined,
  };
}

/** The caller's text: text parts only (the card's input mode is text/plain), joined by newlines. */
function callerText(message: Message): string {
  if (message.role !== Role.ROLE_USER) throw malformed('message.role must be ROLE_USER');
  if (message.parts.length === 0) throw malformed('message.parts must hold at least one text part');
  const texts = message.parts.map((part) =>
    part.content?.$case === 'text' && (part.mediaType === '' || part.mediaType === 'text/plain')
      ? part.content.value
      : undefined,
  );
  if (texts.some((text) => text === undefined))
    throw malformed('message.parts may hold text/plain text parts only');
  return texts.join('\n');
}

/** An sf-string for runIdempotent from the A2A messageId: printable ASCII, quotes and backslashes escaped. */
function messageIdKey(messageId: string): string {
  if (messageId === '') throw malformed('message.messageId is required');
  return `"${messageId.replace(/["\\]/g, '\\$&')}"`;
}

/** Whether the handle names this agent and its card is still published (RLY-1, RLY-2); in its tenant. */
async function agentAtHandle(tx: TenantSql, agentId: string, handle: string): Promise<boolean> {
  const [row] = await tx`
    select 1 from agents
    where ${boundTenant(tx)} and id = ${agentId}::uuid and handle = ${handle} and card_published`;
  return row !== undefined;
}

export class RelayA2AHandler implements A2ARequestHandler {
  readonly #deps: A2AHandlerDeps;
  readonly #call: A2ACall;

  constructor(deps: A2AHandlerDeps, call: A2ACall) {
    this.#deps = deps;
    this.#call = call;
  }

  /** Runs one operation; relay errors become the A2A errors the transport answers with, the rest escapes. */
  async #answer<T>(operation: () => Promise<T>, kind: 'send' | 'cancel' | 'read'): Promise<T> {
    try {
      return await operation();
    } catch (error) {
      throw this.#translate(error, kind);
    }
  }

  #translate(error: unknown, kind: 'send' | 'cancel' | 'read'): unknown {
    if (error instanceof TaskNotFoundError || error instanceof RequestMalformedError) return error;
    if (isAppError(error)) {
      switch (error.code) {
        case 'not_found':
          return notFound();
        case 'validation_failed':
        case 'message_too_large':
        case 'idempotency_key_invalid':
        case 'idempotency_key_reused':
          return malformed(error.field === undefined ? error.message : `${error.field}: ${error.message}`);
        case 'thread_state':
          return kind === 'cancel'
            ? new TaskNotCancelableError({ message: error.message })
            : new UnsupportedOperationError({ message: error.message });
      }
    }
    this.#call.escaped ??= error;
    return new Error('escaped to the problem handler');
  }

  /** RLY-3: the grant of the request's relay token, if it is one for this handle; its points spent first (RLY-5). */
  async #grant(action: 'thread_start' | 'follow_up'): Promise<RelayGrant> {
    const { token, handle, clientAddress } = this.#call;
    if (token === undefined) throw notFound();
    await spendRelayPoints(this.#deps.rateLimits, action, hashToken(token).toString('hex'), clientAddress);
    const grant = await resolveRelayToken(this.#deps.sql, token);
    if (grant === undefined || grant.targetHandle !== handle) throw notFound();
    return grant;
  }

  /** RLY-4: the thread a thread token opens, if it is `taskId` at this handle; its read point spent first (RLY-5). */
  async #threadAccess(taskId: string): Promise<ThreadAccess> {
    const { token, clientAddress } = this.#call;
    if (token === undefined) throw notFound();
    await spendRelayPoints(this.#deps.rateLimits, 'read', hashToken(token).toString('hex'), clientAddress);
    const access = await resolveThreadToken(this.#deps.sql, token);
    if (access === undefined || access.threadId !== taskId) throw notFound();
    return access;
  }

  async #threadAtHandle(tx: TenantSql, threadId: string): Promise<Thread> {
    const thread = await getThread(tx, threadId);
    if (!(await agentAtHandle(tx, thread.agent_id, this.#call.handle))) throw notFound();
    return thread;
  }

  sendMessage(params: SendMessageRequest): Promise<Task> {
    return this.#answer(async () => {
      const { message } = params;
      if (message === undefined) throw malformed('message is required');
      const text = callerText(message);
      const key = this.#call.idempotencyKey ?? messageIdKey(message.messageId);
      // A follow-up names its thread as the task, the context, or both (the same id).
      if (message.taskId !== '' && message.contextId !== '' && message.taskId !== message.contextId) {
        throw malformed('message.taskId and message.contextId must name the same thread');
      }
      const threadId = message.taskId || message.contextId;
      if (threadId !== '' && !isUuid(threadId)) throw notFound();
      const grant = await this.#grant(threadId === '' ? 'thread_start' : 'follow_up');
      const request = {
        method: 'POST',
        url: `/a2a/${this.#call.handle}`,
        body: { message: { ...message, parts: text }, thread: threadId },
        headers: { 'idempotency-key': key },
      };
      const scope = { tenantId: grant.targetTenantId, scope: `a2a:${grant.connectionId}` };
      // RLY-6: a replayed key (or messageId) answers the first task and writes nothing.
      const answer = await runIdempotent(this.#deps.sql, request, scope, { required: true }, async (tx) => {
        if (!(await agentAtHandle(tx, grant.targetAgentId, this.#call.handle))) throw notFound();
        if (threadId === '') {
          const started = await startThread(tx, grant, text);
          return { status: 200, body: threadTask(started.thread, [started.message]) };
        }
        const written = await postCallerMessage(tx, grant, threadId, text);
        return { status: 200, body: threadTask(await getThread(tx, threadId), [written]) };
      });
      // A replay's body is the recorded JSON as text (runIdempotent reads the json column unparsed).
      return typeof answer.body === 'string' ? (JSON.parse(answer.body) as Task) : answer.body;
    }, 'send');
  }

  getTask(params: GetTaskRequest): Promise<Task> {
    return this.#answer(async () => {
      const access = await this.#threadAccess(params.id);
      const history = Math.min(Math.max(params.historyLength ?? MAX_TASK_HISTORY, 0), MAX_TASK_HISTORY);
      return withTenant(this.#deps.sql, access.tenantId, async (tx) => {
        const thread = await this.#threadAtHandle(tx, access.threadId);
        // The latest messages: the last one decides the state even when no history is asked for.
        const window = Math.max(history, 1);
        const recent = await listMessages(tx, thread.id, {
          afterSeq: Math.max(thread.message_count - window, 0),
          limit: window,
        });
        return threadTask(thread, recent.slice(0, window), history);
      });
    }, 'read');
  }

  cancelTask(params: CancelTaskRequest): Promise<Task> {
    return this.#answer(async () => {
      const access = await this.#threadAccess(params.id);
      return withTenant(this.#deps.sql, access.tenantId, async (tx) => {
        await this.#threadAtHandle(tx, access.threadId);
        const closed = await closeThread(tx, access.threadId);
        return threadTask(closed, [], 0);
      });
    }, 'cancel');
  }

  getAgentCard(): Promise<AgentCard> {
    // The card is served (signed) by card-routes.ts; the JSON-RPC transport never asks for it.
    return Promise.reject(
      new UnsupportedOperationError({ message: 'the agent card is at .well-known/agent-card.json' }),
    );
  }

  getAuthenticatedExtendedAgentCard(): Promise<AgentCard> {
    return Promise.reject(
      new ExtendedAgentCardNotConfiguredError({ message: 'there is no extended agent card' }),
    );
  }

  listTasks(): Promise<ListTasksResponse> {
    return Promise.reject(
      new UnsupportedOperationError({ message: 'tasks are read one at a time, with a thread token' }),
    );
  }

  sendMessageStream(): AsyncGenerator<StreamResponse, void, undefined> {
    return refusedStream(
      new UnsupportedOperationError({
        message: 'streaming is not supported (capabilities.streaming is false)',
      }),
    );
  }

  resubscribe(): AsyncGenerator<StreamResponse, void, undefined> {
    return refusedStream(
      new UnsupportedOperationError({
        message: 'streaming is not supported (capabilities.streaming is false)',
      }),
    );
  }

  createTaskPushNotificationConfig(): Promise<TaskPushNotificationConfig> {
    return Promise.reject(pushRefused());
  }

  getTaskPushNotificationConfig(): Promise<TaskPushNotificationConfig> {
    return Promise.reject(pushRefused());
  }

  listTaskPushNotificationConfigs(): Promise<ListTaskPushNotificationConfigsResponse> {
    return Promise.reject(pushRefused());
  }

  deleteTaskPushNotificationConfig(): Promise<void> {
    return Promise.reject(pushRefused());
  }
}

const pushRefused = () =>
  new PushNotificationNotSupportedError({
    message: 'push notifications are not supported (capabilities.pushNotifications is false)',
  });

/** A stream whose first read fails with `error`: the route answers it as one JSON-RPC error. */
function refusedStream(error: Error): AsyncGenerator<StreamResponse, void, undefined> {
  const stream: AsyncGenerator<StreamResponse, void, undefined> = {
    next: () => Promise.reject(error),
    return: () => Promise.resolve({ done: true, value: undefined }),
    throw: (reason: unknown) => Promise.reject(reason),
    [Symbol.asyncIterator]: () => stream,
    [Symbol.asyncDispose]: () => Promise.resolve(),
  };
  return stream;
}
