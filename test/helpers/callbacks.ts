import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { withTenant } from '../../src/db/tenant.ts';
import { createTenant } from './audit.ts';
import type { TestDatabase } from './database.ts';

// Callback endpoints and deliveries made with SQL, for the delivery job's
// tests (the endpoints API is tested on its own), and a local receiver.

export interface TestEndpoint {
  readonly tenantId: string;
  readonly id: string;
  readonly salt: Buffer;
}

export async function callbackEndpoint(
  db: TestDatabase,
  url: string,
  options: { tenantId?: string; agentId?: string; signV1a?: boolean } = {},
): Promise<TestEndpoint> {
  const tenantId = options.tenantId ?? (await createTenant(db, 'callbacks test tenant'));
  const salt = randomBytes(16);
  const id = await withTenant(db.app, tenantId, async (tx) => {
    const [agent] =
      options.agentId === undefined
        ? await tx<{ id: string }[]>`
          insert into agents (tenant_id, handle, name, template_id)
          values (${tenantId}, ${`cb-${randomBytes(5).toString('hex')}`}, 'callbacks test', 'echo') returning id`
        : [{ id: options.agentId }];
    const [endpoint] = await tx<{ id: string }[]>`
      insert into callback_endpoints (tenant_id, agent_id, url, event_types, secret_salt, sign_v1a)
      values (${tenantId}, ${agent?.id ?? null}, ${url}, ${['thread.message_received']}, ${salt},
        ${options.signV1a ?? false})
      returning id`;
    return endpoint?.id;
  });
  if (id === undefined) throw new Error('no endpoint made');
  return { tenantId, id, salt };
}

/** A pending delivery of a made-up event to `endpoint`; its payload is the exact body sent. */
export async function callbackDeliveryRow(
  db: TestDatabase,
  endpoint: TestEndpoint,
): Promise<{ id: string; webhookId: string; payload: string }> {
  const eventId = randomUUID();
  const webhookId = `msg_${randomBytes(12).toString('hex')}`;
  const payload = JSON.stringify({
    type: 'thread.message_received',
    timestamp: new Date().toISOString(),
    data: { thread_id: randomUUID(), connection_id: randomUUID(), agent_handle: 'test', text: 'hello' },
  });
  const id = await withTenant(db.app, endpoint.tenantId, async (tx) => {
    const [row] = await tx<{ id: string }[]>`
      insert into callback_deliveries (tenant_id, endpoint_id, event_id, event_type, webhook_id, payload)
      values (${endpoint.tenantId}, ${endpoint.id}, ${eventId}, 'thread.message_received', ${webhookId},
        ${payload})
      returning id`;
    return row?.id;
  });
  if (id === undefined) throw new Error('no delivery made');
  return { id, webhookId, payload };
}

export interface ReceivedCallback {
  /** The request's path: which endpoint it was sent to, when several share a receiver. */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** performance.now() when the whole body was in. */
  readonly arrivedAt: number;
}

export interface CallbackReceiver {
  readonly url: string;
  readonly received: ReceivedCallback[];
  answer: (res: ServerResponse) => void;
  close(): Promise<void>;
  /** Listens again on the same port after close(): the receiver is back at the same URL. */
  reopen(): Promise<void>;
}

/** A receiver on 127.0.0.1 that records each request and answers with `answer` (mutable). */
export async function callbackReceiver(): Promise<CallbackReceiver> {
  const received: ReceivedCallback[] = [];
  const listen = (port: number) => new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const state = {
    url: '',
    received,
    answer: (res: ServerResponse) => {
      res.writeHead(200).end('ok');
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
    reopen: () => listen(Number(new URL(state.url).port)),
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        arrivedAt: performance.now(),
      });
      state.answer(res);
    });
  });
  await listen(0);
  state.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  return state;
}
