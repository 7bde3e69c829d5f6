import http, {
  type ClientRequest,
  IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import path from 'node:path';
import { type Duplex, pipeline } from 'node:stream';
import type { Sql } from 'postgres';
import { withLookup } from '../../db/lookup.ts';
import type { Logger } from '../../logger.ts';
import { HOST_DIR, HostSocketAgent, HostSocketError } from '../runtime/host-sockets.ts';
import { type ConnectionTimeouts, createFastPath } from './fast-path.ts';
import { type Forwarding, requestHeaders, responseHeaders } from './headers.ts';
import { createRequestLog, type RequestKind } from './request-log.ts';
import { createRunningInstances } from './running.ts';
import { subdomainOf } from './subdomain.ts';

export { PLATFORM_COOKIE_PREFIX } from './headers.ts';

// AGT-3: the ingress. A request (HTTP or WebSocket) whose Host is
// `<subdomain>.<agents domain>` goes to that instance's ingress socket,
// `<instances dir>/<agent id>/host/ingress.sock`, if its instance is running;
// the socket is checked before each connect to be the one the host bound
// (host-sockets.ts), in a directory no sandbox can write.
// Everything else under the agents domain gets one fixed answer, so the
// ingress never tells a guesser which names exist. The platform's own
// session cookie never reaches an instance, and an instance cannot set a
// cookie outside its own host. The subdomain and the path are never logged:
// the subdomain is the instance's only secret address.

export interface Ingress {
  /** True when the request's Host is under the agents domain (then the ingress answers it, whatever it is). */
  claims(host: string | undefined): boolean;
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** A new client connection: served by the fast path until it hands the connection, with its unread bytes, to `handOver`. */
  handleConnection(socket: Socket, timeouts: ConnectionTimeouts, handOver: (unread: Buffer) => void): void;
  close(): void; // ends in-flight proxied connections (server shutdown)
}

/** Who sent a request and over which scheme, as the instance is told in x-forwarded-*. */
export interface ClientOrigin {
  /** The client's address: the socket's peer, or, behind proxies the operator trusts, the address they report. */
  address(req: IncomingMessage): string;
  /** The scheme clients use: the public URL's, as TLS may end at a proxy in front. */
  readonly proto: 'http' | 'https';
}

export interface IngressDeps {
  readonly sql: Sql;
  readonly agentsDomain: string;
  readonly instancesDir: string;
  readonly logger: Logger;
  /** Defaults to the socket's peer and the socket's own scheme. */
  readonly origin?: ClientOrigin;
}

/** The instance must send its response head within this long of the request's end (else 504). */
const HEAD_TIMEOUT_MS = 30_000;
/** A proxied connection (HTTP or a tunnel) with no bytes either way for this long is closed. */
const IDLE_TIMEOUT_MS = 10 * 60_000;
/**
 * How long a running instance's lookup is reused, and how many are kept (running.ts).
 * Short: a deleted or stopped agent's subdomain stops answering within this long even
 * while its instance still listens (the row is the truth; no other process tells the
 * ingress of a change), yet a busy instance costs a lookup or two per interval, made
 * in the background, not one per request.
 */
const RUNNING_CACHE_MS = 100;
const RUNNING_CACHE_SIZE = 10_000;
interface FixedAnswer {
  readonly status: number;
  readonly headers: readonly string[];
  readonly body: Buffer;
}

function fixedAnswer(status: number, text: string): FixedAnswer {
  const body = Buffer.from(`${text}\n`);
  const headers = [
    'content-type',
    'text/plain; charset=utf-8',
    'content-length',
    String(body.length),
    'cache-control',
    'no-store',
    'x-content-type-options',
    'nosniff',
    'content-security-policy',
    "default-src 'none'; frame-ancestors 'none'",
  ];
  return { status, headers, body };
}

// One 404 for every name that does not lead to a running, answering
// instance: unknown, stopped, starting, crashed, and a running row whose
// socket refuses. The last is an instance mid-restart (or crashed before
// the lifecycle recorded it); answering it apart (502) would let a caller
// watch an instance's restarts, so it looks exactly like a stopped one.
// Once an instance has accepted a connection, a failure is 502 or 504: the
// caller is already talking to it, so those reveal nothing new.
const NOT_FOUND = fixedAnswer(404, 'Not found.');
const MALFORMED = fixedAnswer(400, 'Bad request: malformed Host or request target.');
const BAD_GATEWAY = fixedAnswer(502, 'The agent is not answering.');
const GATEWAY_TIMEOUT = fixedAnswer(504, 'The agent did not answer in time.');
const UNAVAILABLE = fixedAnswer(503, 'Service unavailable; try again later.');

function sendFixed(res: ServerResponse, answer: FixedAnswer): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(answer.status, [...answer.headers]).end(answer.body);
}

/** A response head written straight to a socket (upgrade requests have no ServerResponse). */
function rawHead(status: number, headers: readonly string[]): Buffer {
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
  for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  // latin1: header values arrive decoded as latin1, so this writes back the bytes received.
  return Buffer.from(`${head}\r\n`, 'latin1');
}

/** A whole answer as bytes, ending its connection. */
function fixedRaw(answer: FixedAnswer): Buffer {
  return Buffer.concat([rawHead(answer.status, [...answer.headers, 'connection', 'close']), answer.body]);
}

function sendFixedRaw(socket: Duplex, answer: FixedAnswer): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(fixedRaw(answer));
}

const NOTHING_KEPT: ReadonlySet<string> = new Set();
const UPGRADE_KEPT: ReadonlySet<string> = new Set(['connection', 'upgrade']);

/**
 * The socket is missing, nobody listens on it, or it is not the one the host
 * bound: the instance is not up, whatever its row says.
 */
function refused(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === 'ENOENT' || code === 'ECONNREFUSED' || error instanceof HostSocketError;
}

export function createIngress(deps: IngressDeps): Ingress {
  const { agentsDomain, logger } = deps;
  const agent = new HostSocketAgent({ keepAlive: true, maxFreeSockets: 16 });
  const upgradeAgent = new HostSocketAgent({ keepAlive: false });
  const upstreams = new Set<ClientRequest>();
  const tunnels = new Set<Duplex>();
  let closing = false;

  // Running instances' lookups, reused for RUNNING_CACHE_MS at most (running.ts).
  const running = createRunningInstances({
    async read(subdomain) {
      // The lookup policy shows this one row (if any) and nothing else, before any tenant is known.
      const rows = await withLookup(
        deps.sql,
        subdomain,
        (tx) => tx<{ agent_id: string; state: string }[]>`
          select agent_id::text, state from agent_instances where subdomain = ${subdomain}::text`,
      );
      const row = rows[0];
      return row?.state === 'running' ? row.agent_id : undefined;
    },
    ttlMs: RUNNING_CACHE_MS,
    size: RUNNING_CACHE_SIZE,
  });
  const runningAgent = running.lookup;

  /** The instance's socket refused: it is not up, whatever the row said a moment ago. */
  function notAnswering(subdomain: string, error: unknown): FixedAnswer {
    if (!refused(error)) return BAD_GATEWAY;
    running.forget(subdomain);
    return NOT_FOUND;
  }

  const socketOf = (agentId: string): string =>
    path.join(deps.instancesDir, agentId, HOST_DIR, 'ingress.sock');
  /** The instance's own host name: the only Domain its cookies may name. */
  const instanceHost = (subdomain: string): string => `${subdomain}.${agentsDomain}`;

  // One line per request, so it must be cheap (request-log.ts).
  const requestLog = createRequestLog(logger);

  function logged(kind: RequestKind, method: string | undefined, started: number) {
    return (status: number, agentId: string | undefined): void =>
      requestLog.line(kind, method, status, agentId, Math.round(performance.now() - started));
  }

  /** The validated Host (lowercase, with its port if any) and subdomain, or undefined for a malformed request. */
  function target(req: IncomingMessage): { host: string; subdomain: string } | undefined {
    const subdomain = subdomainOf(req.headers.host ?? '', agentsDomain);
    // Absolute-form targets (http://elsewhere/…) would name a second host: origin-form only.
    if (subdomain === undefined || subdomain === 'malformed' || !req.url?.startsWith('/')) return undefined;
    // Validated, so plain ASCII: lowercasing cannot change what it names.
    return { host: (req.headers.host ?? '').toLowerCase(), subdomain };
  }

  const fastPath = createFastPath({
    agentsDomain,
    proto: deps.origin?.proto,
    cachedAgent: running.cached,
    runningAgent,
    socketOf,
    clientAddress(client, forwardedFor) {
      if (deps.origin === undefined) return client.remoteAddress ?? '';
      // The operator's rule reads a request: one that carries just what the rule looks at.
      const message = new IncomingMessage(client);
      if (forwardedFor !== undefined) message.headers['x-forwarded-for'] = forwardedFor;
      return deps.origin.address(message);
    },
    instanceHost,
    log: (method, status, agentId, ms) => requestLog.line('http', method, status, agentId, ms),
    closing: () => closing,
    badGateway: fixedRaw(BAD_GATEWAY),
    gatewayTimeout: fixedRaw(GATEWAY_TIMEOUT),
    headTimeoutMs: HEAD_TIMEOUT_MS,
    idleTimeoutMs: IDLE_TIMEOUT_MS,
  });

  function forwardingOf(req: IncomingMessage, host: string): Forwarding {
    const encrypted = 'encrypted' in req.socket && req.socket.encrypted === true;
    return {
      host,
      clientAddress: deps.origin?.address(req) ?? req.socket.remoteAddress ?? '',
      proto: deps.origin?.proto ?? (encrypted ? 'https' : 'http'),
    };
  }

  function failed(error: unknown): void {
    // The code only: a message could name the socket path.
    logger.error({ code: (error as { code?: unknown }).code }, 'ingress request failed');
  }

  async function proxy(req: IncomingMessage, res: ServerResponse, host: string, subdomain: string) {
    const agentId = await runningAgent(subdomain);
    if (res.destroyed) return undefined;
    if (agentId === undefined) {
      sendFixed(res, NOT_FOUND);
      return undefined;
    }
    const upstream = http.request({
      socketPath: socketOf(agentId),
      method: req.method,
      path: req.url,
      headers: requestHeaders(req.rawHeaders, forwardingOf(req, host)),
      agent,
    });
    upstreams.add(upstream);
    let phase: 'waiting' | 'streaming' | 'done' = 'waiting';
    let headTimer: NodeJS.Timeout | undefined;
    const answer = (fixed: FixedAnswer): void => {
      phase = 'done';
      clearTimeout(headTimer);
      req.unpipe(upstream);
      req.resume(); // drain what is left of the body, so the connection can carry the next request
      upstream.destroy();
      sendFixed(res, fixed);
    };
    upstream.setTimeout(IDLE_TIMEOUT_MS, () => {
      if (phase === 'waiting') answer(GATEWAY_TIMEOUT);
      else if (phase === 'streaming') res.destroy();
    });
    upstream.on('finish', () => {
      if (phase === 'waiting') headTimer = setTimeout(() => answer(GATEWAY_TIMEOUT), HEAD_TIMEOUT_MS);
    });
    upstream.on('response', (upRes) => {
      if (phase !== 'waiting') return void upRes.destroy();
      phase = 'streaming';
      clearTimeout(headTimer);
      res.writeHead(
        upRes.statusCode ?? 502,
        responseHeaders(upRes.rawHeaders, instanceHost(subdomain), NOTHING_KEPT),
      );
      // A response cut short by the instance is cut short for the client too (never passed off as whole).
      upRes.on('close', () => {
        phase = 'done';
        if (!upRes.complete) res.destroy();
      });
      upRes.on('error', () => res.destroy());
      upRes.pipe(res);
    });
    upstream.on('error', (error) => {
      if (phase === 'waiting') answer(notAnswering(subdomain, error));
      else if (phase === 'streaming') res.destroy();
    });
    upstream.on('close', () => {
      upstreams.delete(upstream);
      clearTimeout(headTimer);
    });
    // The client went away before the response ended: so does the request to the instance.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.on('error', () => upstream.destroy());
    // Nothing to stream without a body (most requests): the request ends at once, with no pipe to set up.
    if (hasBody(req)) req.pipe(upstream);
    else upstream.end();
    return agentId;
  }

  function tunnel(client: Duplex, instance: Duplex): void {
    const idle = setTimeout(() => client.destroy(), IDLE_TIMEOUT_MS);
    for (const [from, to] of [
      [client, instance],
      [instance, client],
    ] as const) {
      tunnels.add(from);
      from.on('data', () => idle.refresh());
      from.on('error', () => to.destroy());
      from.on('close', () => {
        tunnels.delete(from);
        clearTimeout(idle);
        to.destroy();
      });
      from.pipe(to);
    }
  }

  async function proxyUpgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    found: { host: string; subdomain: string },
    log: (status: number, agentId: string | undefined) => void,
  ): Promise<void> {
    const agentId = await runningAgent(found.subdomain);
    if (socket.destroyed) return;
    const answer = (fixed: FixedAnswer): void => {
      log(fixed.status, agentId);
      sendFixedRaw(socket, fixed);
    };
    if (agentId === undefined) return answer(NOT_FOUND);
    const upstream = http.request({
      socketPath: socketOf(agentId),
      method: req.method,
      path: req.url,
      headers: requestHeaders(
        req.rawHeaders,
        forwardingOf(req, found.host),
        req.headers.upgrade ?? 'websocket',
      ),
      agent: upgradeAgent,
    });
    upstreams.add(upstream);
    let waiting = true;
    const settle = (): boolean => {
      const first = waiting;
      waiting = false;
      clearTimeout(headTimer);
      return first;
    };
    const headTimer = setTimeout(() => {
      if (!settle()) return;
      upstream.destroy();
      answer(GATEWAY_TIMEOUT);
    }, HEAD_TIMEOUT_MS);
    upstream.on('upgrade', (upRes, upSocket, upHead) => {
      upstreams.delete(upstream);
      if (!settle()) return void upSocket.destroy();
      log(101, agentId);
      socket.write(
        rawHead(101, responseHeaders(upRes.rawHeaders, instanceHost(found.subdomain), UPGRADE_KEPT)),
      );
      if (upHead.length > 0) socket.write(upHead);
      if (head.length > 0) upSocket.write(head);
      tunnel(socket, upSocket);
    });
    // The instance refused the upgrade: its answer goes back as is, delimited by closing the connection.
    upstream.on('response', (upRes) => {
      if (!settle()) return void upRes.destroy();
      const status = upRes.statusCode ?? 502;
      log(status, agentId);
      const headers = responseHeaders(upRes.rawHeaders, instanceHost(found.subdomain), NOTHING_KEPT);
      socket.write(rawHead(status, [...withoutHeader(headers, 'content-length'), 'connection', 'close']));
      pipeline(upRes, socket, () => upstream.destroy());
    });
    upstream.on('error', (error) => {
      if (settle()) answer(notAnswering(found.subdomain, error));
      else socket.destroy();
    });
    upstream.on('close', () => {
      upstreams.delete(upstream);
      clearTimeout(headTimer);
    });
    socket.on('close', () => upstream.destroy());
    upstream.end();
  }

  return {
    claims(host) {
      return host !== undefined && subdomainOf(host, agentsDomain) !== undefined;
    },

    handleRequest(req, res) {
      const log = logged('http', req.method, performance.now());
      let agentId: string | undefined;
      res.on('close', () => log(res.statusCode, agentId));
      if (closing) {
        res.shouldKeepAlive = false;
        return sendFixed(res, UNAVAILABLE);
      }
      const found = target(req);
      if (found === undefined) return sendFixed(res, MALFORMED);
      proxy(req, res, found.host, found.subdomain).then(
        (id) => {
          agentId = id;
        },
        (error: unknown) => {
          failed(error);
          sendFixed(res, UNAVAILABLE);
        },
      );
    },

    handleUpgrade(req, socket, head) {
      const log = logged('upgrade', req.method, performance.now());
      socket.on('error', () => socket.destroy());
      const found = target(req);
      if (closing || found === undefined) {
        const fixed = closing ? UNAVAILABLE : MALFORMED;
        log(fixed.status, undefined);
        return sendFixedRaw(socket, fixed);
      }
      proxyUpgrade(req, socket, head, found, log).catch((error: unknown) => {
        failed(error);
        log(UNAVAILABLE.status, undefined);
        sendFixedRaw(socket, UNAVAILABLE);
      });
    },

    handleConnection(socket, timeouts, handOver) {
      if (closing) return handOver(Buffer.alloc(0));
      fastPath.accept(socket, timeouts, handOver);
    },

    close() {
      closing = true;
      fastPath.close();
      for (const upstream of upstreams) upstream.destroy();
      for (const socket of tunnels) socket.destroy();
      agent.destroy();
      upgradeAgent.destroy();
      requestLog.flush();
    },
  };
}

/** Whether a request carries a body (RFC 9112 §6.3: a request without either header has none). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Header pairs without those named `name` (lowercase). */
function withoutHeader(headers: readonly string[], name: string): string[] {
  const kept: string[] = [];
  for (let i = 0; i + 1 < headers.length; i += 2) {
    if (headers[i]?.toLowerCase() !== name) kept.push(headers[i] ?? '', headers[i + 1] ?? '');
  }
  return kept;
}

/** What Fastify hands its serverFactory and applies to a server it makes itself (fastify lib/server.js). */
export interface PlatformServerOptions {
  readonly keepAliveTimeout?: number;
  readonly requestTimeout?: number;
  readonly connectionTimeout?: number;
  readonly maxRequestsPerSocket?: number;
}

/**
 * The HTTP server for Fastify's serverFactory: requests and upgrades whose
 * Host the ingress claims go to it; everything else goes to the platform
 * (Fastify) exactly as before.
 */
export function createIngressServer(
  ingress: Ingress,
  platform: (req: IncomingMessage, res: ServerResponse) => void,
  options: PlatformServerOptions,
): Server {
  const server = http.createServer(
    // Node ≥ 24.9: an unclaimed upgrade stays an ordinary request for the platform.
    { shouldUpgradeCallback: (req) => ingress.claims(req.headers.host) },
    (req, res) => (ingress.claims(req.headers.host) ? ingress.handleRequest(req, res) : platform(req, res)),
  );
  // Every connection starts on the ingress's fast path, which hands it to this server's own
  // connection handling (with the bytes it read) as soon as a request is not one it serves itself.
  const httpConnection = server.listeners('connection') as ((this: Server, socket: Socket) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    ingress.handleConnection(
      socket,
      { headMs: server.headersTimeout, keepAliveMs: server.keepAliveTimeout },
      (unread) => {
        if (unread.length > 0) socket.unshift(unread);
        for (const listener of httpConnection) listener.call(server, socket);
        // Paused when handed over: the bytes given back flow to the server's parser first, then what follows.
        socket.resume();
      },
    );
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (ingress.claims(req.headers.host)) return ingress.handleUpgrade(req, socket, head);
    // Older Node sends every upgrade here; the platform serves no upgrades.
    socket.on('error', () => socket.destroy());
    socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
  });
  if (options.keepAliveTimeout !== undefined) server.keepAliveTimeout = options.keepAliveTimeout;
  if (options.requestTimeout !== undefined) server.requestTimeout = options.requestTimeout;
  if (options.connectionTimeout !== undefined) server.setTimeout(options.connectionTimeout);
  if (options.maxRequestsPerSocket !== undefined && options.maxRequestsPerSocket > 0) {
    server.maxRequestsPerSocket = options.maxRequestsPerSocket;
  }
  return server;
}
