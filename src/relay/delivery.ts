import http from 'node:http';
import path from 'node:path';
import type { Sql } from 'postgres';
import { requestHeaders } from '../agents/ingress/headers.ts';
import { HOST_DIR, HostSocketAgent } from '../agents/runtime/host-sockets.ts';
import type { TemplateCatalog } from '../agents/templates.ts';
import { isUuid, serviceQuery, type TenantSql } from '../db/tenant.ts';
import { AppError } from '../errors.ts';
import { boundTenant } from '../http/page-cursor.ts';
import type { Logger } from '../logger.ts';
import { wrapUntrusted } from './envelope.ts';
import { enqueueDelivery, messageProblem, recordAgentAnswer } from './threads.ts';

// The `relay_deliver` job (issue #15 item 5, OPS-2): one caller message of a
// thread, POSTed to the target agent's running instance through the same
// socket the ingress uses (checked by HostSocketAgent, as the ingress's
// connections are), with the headers the ingress would set, at the path its
// template declares (`relay_path`, default /messages).
//
// The contract for agent authors (README "Relay messages"):
//   POST <relay_path>, content-type application/json, Idempotency-Key: <message id>
//   { "thread_id", "message_id", "from": caller agent handle | null (a person),
//     "text": the caller's text inside the untrusted-content envelope (RLY-8) }
//   2xx with { "text": "…" } (1 to MAX_MESSAGE_BYTES of UTF-8) → the agent's reply in the thread.
//   4xx, a 1xx/3xx, or an answer that is not that JSON or is over MAX_ANSWER_BYTES → the message
//   is `failed`, not retried. 5xx, a refused connection or no answer in DELIVERY_TIMEOUT_MS →
//   retried with backoff (RELAY_DELIVER_ATTEMPTS tries); the message stays `queued` meanwhile.
// An instance that is not running leaves the message `queued`; when it starts, every queued
// message of its open threads is enqueued again (enqueueQueuedDeliveries, from lifecycle.ts).
//
// Binding the tenant: serviceQuery, as agent_instance_sync does. The job acts
// for the target's tenant with no request principal behind it, so it names
// the tenant and a reason explicitly and each call is an audit event (TEN-5);
// withTenant is for principals a request authenticated.

/** The whole exchange, connect to last byte: the ingress gives an instance as long for its response head. */
export const DELIVERY_TIMEOUT_MS = 30_000;
/** The most of an answer read: a `text` of MAX_MESSAGE_BYTES, JSON-escaped, fits several times over. */
export const MAX_ANSWER_BYTES = 256 * 1024;
/** The envelope's `from` for a person (no agent handle): `enclave-` names are reserved, so no agent can have it. */
export const PERSON_FROM = 'enclave-person';

export type DeliveryErrorCode = 'relay_delivery_payload_invalid' | 'relay_delivery_unavailable';

/** What the target agent receives. */
export interface RelayDeliveryRequest {
  readonly thread_id: string;
  readonly message_id: string;
  /** The calling agent's handle; null: a person asked (the envelope then says PERSON_FROM). */
  readonly from: string | null;
  /** The caller's text, wrapped: `<untrusted_caller_content from="…">…</untrusted_caller_content>`. */
  readonly text: string;
}

export interface RelayDeliveryDeps {
  readonly sql: Sql;
  readonly templates: Pick<TemplateCatalog, 'get'>;
  readonly instancesDir: string;
  readonly agentsDomain: string;
  /** The scheme clients use (the public URL's), as the ingress tells instances in x-forwarded-proto. */
  readonly proto: 'http' | 'https';
  readonly logger: Logger;
  readonly timeoutMs?: number;
}

/** What one POST came to. */
type Outcome =
  | { readonly kind: 'answer'; readonly text: string }
  | { readonly kind: 'refused'; readonly why: string };

interface Pending {
  readonly threadId: string;
  readonly agentId: string;
  readonly subdomain: string;
  readonly relayPath: string;
  readonly request: RelayDeliveryRequest;
}

/** The payload, read back from the job table: checked before it reaches SQL. */
function payloadOf(value: unknown): { tenantId: string; messageId: string } {
  const payload = value as { tenant_id?: unknown; message_id?: unknown } | null;
  if (!isUuid(payload?.tenant_id) || !isUuid(payload.message_id)) {
    throw new AppError<DeliveryErrorCode>(
      'relay_delivery_payload_invalid',
      'relay_deliver: the payload needs a tenant_id and a message_id (uuids)',
    );
  }
  return { tenantId: payload.tenant_id, messageId: payload.message_id };
}

/** The body of the request to the agent (exported for the templates' tests and the bench). */
export function deliveryRequest(
  threadId: string,
  messageId: string,
  requesterHandle: string | null,
  body: string,
): RelayDeliveryRequest {
  return {
    thread_id: threadId,
    message_id: messageId,
    from: requesterHandle,
    text: wrapUntrusted(requesterHandle ?? PERSON_FROM, body),
  };
}

/** Reads an answer: `{ "text": "…" }` within the message limits, else why not. */
function answerOf(bytes: Buffer): Outcome {
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { kind: 'refused', why: 'the answer is not JSON' };
  }
  const text = (parsed as { text?: unknown } | null)?.text;
  const problem = messageProblem(text);
  if (problem !== undefined || typeof text !== 'string') {
    return { kind: 'refused', why: `the answer's text ${problem?.message ?? 'is missing'}` };
  }
  return { kind: 'answer', text };
}

/** Where a job POSTs: an agent's running instance, at a path of its template. */
export interface InstanceTarget {
  readonly agentId: string;
  readonly subdomain: string;
  readonly path: string;
}

/** What one POST came to: a 2xx's body (up to MAX_ANSWER_BYTES), or why the agent refused it. */
export type PostOutcome =
  | { readonly kind: 'ok'; readonly bytes: Buffer }
  | { readonly kind: 'refused'; readonly why: string };

/**
 * POSTs JSON to an instance through its ingress socket, with the ingress's header rules
 * (shared by the relay's and the inbound webhooks' delivery jobs). Throws a
 * `relay_delivery_unavailable` AppError when it is worth another try (5xx, no connection,
 * no answer in time); a 1xx/3xx/4xx or an over-long answer is `refused`.
 */
export function createInstancePoster(
  deps: Pick<RelayDeliveryDeps, 'instancesDir' | 'agentsDomain' | 'proto' | 'timeoutMs'>,
) {
  const timeoutMs = deps.timeoutMs ?? DELIVERY_TIMEOUT_MS;
  const agent = new HostSocketAgent({ keepAlive: true, maxFreeSockets: 16 });
  return function postToInstance(
    target: InstanceTarget,
    idempotencyKey: string,
    payload: unknown,
  ): Promise<PostOutcome> {
    const body = Buffer.from(JSON.stringify(payload), 'utf8');
    const own = [
      'content-type',
      'application/json; charset=utf-8',
      'accept',
      'application/json',
      'content-length',
      String(body.length),
      'idempotency-key',
      idempotencyKey,
    ];
    // The ingress's own header rules; no client connection stands behind the job, so no client address.
    const headers = requestHeaders(own, {
      host: `${target.subdomain}.${deps.agentsDomain}`,
      clientAddress: '',
      proto: deps.proto,
    });
    return new Promise<PostOutcome>((resolve, reject) => {
      const retry = (why: string, cause?: unknown) =>
        reject(
          new AppError<DeliveryErrorCode>(
            'relay_delivery_unavailable',
            `the agent is not answering: ${why}`,
            {
              cause,
            },
          ),
        );
      const request = http.request({
        socketPath: path.join(deps.instancesDir, target.agentId, HOST_DIR, 'ingress.sock'),
        method: 'POST',
        path: target.path,
        headers,
        agent,
      });
      const timer = setTimeout(() => {
        request.destroy();
        retry(`no answer within ${timeoutMs} ms`);
      }, timeoutMs);
      const settle = (outcome: PostOutcome) => {
        clearTimeout(timer);
        resolve(outcome);
      };
      request.on('error', (error) => {
        clearTimeout(timer);
        // The code only: a message could name the socket path.
        retry((error as { code?: string }).code ?? 'connection failed');
      });
      request.on('response', (response) => {
        const status = response.statusCode ?? 0;
        if (status >= 500) {
          response.resume();
          clearTimeout(timer);
          return retry(`it answered ${status}`);
        }
        if (status < 200 || status >= 300) {
          response.resume();
          return settle({ kind: 'refused', why: `it answered ${status}` });
        }
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_ANSWER_BYTES) {
            request.destroy();
            settle({ kind: 'refused', why: `the answer is over ${MAX_ANSWER_BYTES} bytes` });
            return;
          }
          chunks.push(chunk);
        });
        response.on('end', () => settle({ kind: 'ok', bytes: Buffer.concat(chunks) }));
        response.on('error', (error) => {
          clearTimeout(timer);
          retry((error as { code?: string }).code ?? 'the answer was cut short');
        });
      });
      request.end(body);
    });
  };
}

export function createRelayDelivery(deps: RelayDeliveryDeps) {
  const postToInstance = createInstancePoster(deps);
  const log = deps.logger.child({ component: 'relay-delivery' });

  /** The message, if it is still to be sent now; counts the attempt. One tenant transaction. */
  function load(tenantId: string, messageId: string): Promise<Pending | undefined> {
    return serviceQuery(deps.sql, { tenantId, reason: 'relay: deliver a message' }, async (tx) => {
      const [row] = await tx<
        {
          thread_id: string;
          body: string | null;
          delivery: string;
          thread_state: string;
          requester_handle: string | null;
          agent_id: string;
          template_id: string;
          instance_state: string | null;
          subdomain: string | null;
          answered: boolean;
        }[]
      >`
        select m.thread_id, m.body, m.delivery, t.state as thread_state, t.requester_handle, t.agent_id,
          a.template_id, i.state as instance_state, i.subdomain,
          exists (select 1 from relay_messages r where r.tenant_id = m.tenant_id and r.reply_to = m.id) as answered
        from relay_messages m
        join relay_threads t on t.tenant_id = m.tenant_id and t.id = m.thread_id
        join agents a on a.tenant_id = t.tenant_id and a.id = t.agent_id
        left join agent_instances i on i.agent_id = t.agent_id
        where ${boundTenant(tx, tx`m.tenant_id`)} and m.id = ${messageId}::uuid and m.author = 'caller'
        for update of m`;
      // Gone, payload expired (RLY-9), already delivered or failed, or the thread ended: nothing to send.
      if (
        row === undefined ||
        row.body === null ||
        row.delivery !== 'queued' ||
        row.thread_state !== 'open'
      ) {
        return undefined;
      }
      if (row.answered) {
        // An answer recorded by an earlier run: the message was delivered.
        await markDelivery(tx, messageId, 'delivered');
        return undefined;
      }
      const template = deps.templates.get(row.template_id);
      // Not running (or not installable here): the message waits, queued, for the instance's start.
      if (row.instance_state !== 'running' || row.subdomain === null || template === undefined)
        return undefined;
      await tx`
        update relay_messages set delivery_attempts = delivery_attempts + 1
        where ${boundTenant(tx)} and id = ${messageId}::uuid`;
      return {
        threadId: row.thread_id,
        agentId: row.agent_id,
        subdomain: row.subdomain,
        relayPath: template.relayPath,
        request: deliveryRequest(row.thread_id, messageId, row.requester_handle, row.body),
      };
    });
  }

  return {
    /** The `relay_deliver` job. */
    async deliver(payload: unknown): Promise<void> {
      const { tenantId, messageId } = payloadOf(payload);
      const pending = await load(tenantId, messageId);
      if (pending === undefined) return;
      const posted = await postToInstance(
        { agentId: pending.agentId, subdomain: pending.subdomain, path: pending.relayPath },
        pending.request.message_id,
        pending.request,
      );
      const outcome: Outcome = posted.kind === 'ok' ? answerOf(posted.bytes) : posted;
      await serviceQuery(deps.sql, { tenantId, reason: 'relay: record a delivery' }, async (tx) => {
        if (outcome.kind === 'answer') {
          // Once per message: a run after a crash here finds the first answer (recordAgentAnswer).
          await recordAgentAnswer(tx, pending.threadId, messageId, outcome.text);
          await markDelivery(tx, messageId, 'delivered');
        } else {
          await markDelivery(tx, messageId, 'failed');
        }
      });
      if (outcome.kind === 'refused') {
        log.warn(
          { messageId, agentId: pending.agentId, why: outcome.why },
          'relay message refused by the agent',
        );
      }
    },
  };
}

export type RelayDelivery = ReturnType<typeof createRelayDelivery>;

async function markDelivery(
  tx: TenantSql,
  messageId: string,
  delivery: 'delivered' | 'failed',
): Promise<void> {
  await tx`
    update relay_messages
    set delivery = ${delivery}, delivered_at = case when ${delivery} = 'delivered' then now() else delivered_at end
    where ${boundTenant(tx)} and id = ${messageId}::uuid and delivery = 'queued'`;
}

/**
 * Enqueues delivery of every queued message of `agentId`'s open threads, in
 * the order written (each thread is its own queue); called in the
 * transaction that records its instance running. Returns how many.
 */
export async function enqueueQueuedDeliveries(
  tx: TenantSql,
  tenantId: string,
  agentId: string,
): Promise<number> {
  const queued = await tx<{ id: string; thread_id: string }[]>`
    select m.id, m.thread_id from relay_messages m
    join relay_threads t on t.tenant_id = m.tenant_id and t.id = m.thread_id
    where ${boundTenant(tx, tx`m.tenant_id`)} and t.agent_id = ${agentId}::uuid and t.state = 'open'
      and m.delivery = 'queued'
    order by m.thread_id, m.seq`;
  for (const message of queued) await enqueueDelivery(tx, tenantId, message.thread_id, message.id);
  return queued.length;
}
