import http, { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { Sql } from 'postgres';
import { connectionListed, HOP_BY_HOP } from '../../http/hop-by-hop.ts';
import type { Logger } from '../../logger.ts';
import type { EgressIdentity } from '../runtime/driver.ts';
import { listenHostSocket, removeHostSocket } from '../runtime/host-sockets.ts';
import {
  allowlistVerdict,
  destinationVerdict,
  type IpRange,
  parseAllowRanges,
  parseConnectTarget,
  parseHttpTarget,
  parseIpRange,
  type Target,
} from './destinations.ts';
import { createHostAddressReader } from './host-addresses.ts';
import { createEgressRecorder, type EgressMethod, type EgressRecord } from './records.ts';
import { createCaresLookup, type LookupFn } from './resolver.ts';

// The platform's egress proxy (AGT-4). Each agent instance's sandbox has no
// network of its own: its supervisor forwards the agent's HTTP(S)_PROXY port
// to <instance dir>/host/egress.sock (bound read-only into the sandbox), where one listener per instance speaks
// HTTP CONNECT and plain (absolute-form) HTTP forwarding. Every target passes
// the agent's allowlist, is resolved once (resolver.ts: c-ares, never the
// thread pool), and every resolved address must be public and none of the
// host's own (destinations.ts, host-addresses.ts) before the proxy connects to
// that checked address itself; every connection and attempt becomes one
// egress_connections row.
//
// Logs never carry URL paths, queries or headers (they carry secrets); hosts
// and ports appear at debug level only.

export interface EgressListener {
  /** Stops accepting, ends open tunnels, awaits pending records. */
  close(): Promise<void>;
}

export interface EgressProxy {
  /** Listens on a Unix socket path (mode 0666: the sandbox's unprivileged uid must connect) for one instance. */
  listen(socketPath: string, identity: EgressIdentity): Promise<EgressListener>;
}

export const MAX_HEAD_BYTES = 16 * 1024;
export const HEAD_TIMEOUT_MS = 10_000;
/** Tunnels and forwarded requests open at once per listener; the next answers 503. */
export const MAX_TUNNELS = 256;
/** A tunnel or forwarded request with no bytes either way for this long is closed. */
export const IDLE_TIMEOUT_MS = 10 * 60_000;
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** A name not resolved within this long is refused with 502 'DNS timeout'. */
const DEFAULT_DNS_TIMEOUT_MS = 5_000;
/** Connections to the socket itself (idle keep-alives included); beyond it the kernel-accepted socket is dropped. */
const MAX_AGENT_CONNECTIONS = 2 * MAX_TUNNELS;
/** After one side of a tunnel has closed, how long the other may take to finish. */
const LINGER_MS = 10_000;

type Refusal = { readonly status: 400 | 403 | 502 | 503; readonly reason: string };
type Opened = { readonly socket: net.Socket } | { readonly refusal: Refusal };

const noop = (): void => {};
const errorCode = (error: unknown): string =>
  String((error as { code?: unknown } | undefined)?.code ?? (error as Error | undefined)?.name ?? 'error');

function plainResponse(status: number, reason: string): string {
  const body = `${reason}\n`;
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
    `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
    `Connection: close\r\n\r\n${body}`
  );
}

function sendPlain(res: ServerResponse, status: number, reason: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${reason}\n`;
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close',
  });
  res.end(body);
}

/** rawHeaders without hop-by-hop headers, those the Connection header names, and `drop`. */
function endToEndHeaders(rawHeaders: readonly string[], drop: readonly string[] = []): string[] {
  const named = new Set(connectionListed(rawHeaders));
  for (const name of drop) named.add(name);
  const kept: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] ?? '';
    const lower = name.toLowerCase();
    if (!HOP_BY_HOP.has(lower) && !named.has(lower)) kept.push(name, rawHeaders[i + 1] ?? '');
  }
  return kept;
}

function withTimeout<T>(promise: Promise<T>, ms: number, code: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error(code), { code })), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Ends `socket` gracefully (after `last`), and destroys it if it has not closed within LINGER_MS. */
function release(socket: Duplex, last?: string): void {
  if (socket.destroyed) return;
  if (last === undefined) socket.end();
  else socket.end(last);
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/**
 * DNS lookups one listener (one instance) may have in flight at once; past it,
 * 503. c-ares keeps them off the thread pool; the cap bounds the sockets and
 * memory one instance's unanswered names hold, whatever it asks for.
 */
export const MAX_LOOKUPS_IN_FLIGHT = 4;

/**
 * The platform's public address: the host of its public URL, an IP literal
 * or what the egress resolver answers for its name at start (what an agent
 * would get for it). On failure only the host's own addresses are refused.
 */
async function platformRanges(
  publicUrl: string | undefined,
  lookup: LookupFn,
  timeoutMs: number,
  logger: Logger,
): Promise<readonly IpRange[]> {
  if (publicUrl === undefined) return [];
  try {
    const host = new URL(publicUrl).hostname.replace(/^\[|\]$/g, '');
    const single = parseIpRange(host);
    if (single !== undefined) return [single];
    const found = await withTimeout(lookup(host), timeoutMs, 'ETIMEOUT');
    return found.flatMap(({ address }) => parseIpRange(address) ?? []);
  } catch (error) {
    logger.warn(
      { err: { code: errorCode(error) } },
      'the public URL did not resolve: egress refuses only the addresses the host holds',
    );
    return [];
  }
}

export function createEgressProxy(deps: {
  sql: Sql;
  logger: Logger;
  allow: readonly string[];
  /** The platform's public URL (config.publicUrl): the addresses of its host are refused as the host's own. */
  publicUrl?: string;
  /** DNS servers (`ip` or `ip:port`) instead of the system's: for tests. */
  dnsServers?: readonly string[];
  dnsTimeoutMs?: number;
  /** Resolves names instead of c-ares: for tests. */
  lookup?: LookupFn;
  connectTimeoutMs?: number;
}): EgressProxy {
  const allow = parseAllowRanges(deps.allow);
  const dnsTimeoutMs = deps.dnsTimeoutMs ?? DEFAULT_DNS_TIMEOUT_MS;
  const lookup =
    deps.lookup ??
    createCaresLookup({
      timeoutMs: dnsTimeoutMs,
      ...(deps.dnsServers === undefined ? {} : { servers: deps.dnsServers }),
    });
  const connectTimeoutMs = deps.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const hostRanges = createHostAddressReader();
  const platform = platformRanges(deps.publicUrl, lookup, dnsTimeoutMs, deps.logger);

  async function listen(socketPath: string, identity: EgressIdentity): Promise<EgressListener> {
    const platformAddresses = await platform;
    const log = deps.logger.child({ agentId: identity.agentId, tenantId: identity.tenantId });
    const recorder = createEgressRecorder(deps, identity);
    let lookupsInFlight = 0;
    const sockets = new Set<Duplex>();
    const inFlight = new Set<Promise<void>>();
    let active = 0;
    let closed = false;

    const adopt = <S extends Duplex>(socket: S): S => {
      sockets.add(socket);
      socket.on('error', noop); // each use reports errors through its own handlers or 'close'
      socket.once('close', () => sockets.delete(socket));
      if (closed) socket.destroy();
      return socket;
    };

    const run = (work: () => Promise<void>): void => {
      const running: Promise<void> = work()
        .catch((error: unknown) => log.error({ err: { code: errorCode(error) } }, 'egress handler failed'))
        .finally(() => inFlight.delete(running));
      inFlight.add(running);
    };

    function record(target: Target, method: EgressMethod, started: Started, fields: Outcome): void {
      const entry: EgressRecord = {
        host: target.host,
        port: target.port,
        method,
        startedAt: started.at,
        durationMs: performance.now() - started.clock,
        ...fields,
      };
      log.debug(
        { host: entry.host, port: entry.port, method, allowed: entry.allowed, reason: entry.reason },
        'egress connection',
      );
      recorder.record(entry);
    }

    function connectTo(address: string, port: number): Promise<net.Socket> {
      return new Promise((resolve, reject) => {
        // address is a checked IP literal, so net.connect does no lookup of its own.
        const socket = adopt(net.connect({ host: address, port, noDelay: true }));
        const timer = setTimeout(() => {
          socket.destroy();
          reject(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
        }, connectTimeoutMs);
        socket.once('connect', () => {
          clearTimeout(timer);
          resolve(socket);
        });
        socket.once('close', () => {
          clearTimeout(timer);
          reject(
            Object.assign(new Error('connect failed'), {
              code: socket.errored ? errorCode(socket.errored) : 'ECONNRESET',
            }),
          );
        });
      });
    }

    /** Allowlist, one resolution, every address checked, then a connection to a checked address. */
    async function open(target: Target): Promise<Opened> {
      const listed = allowlistVerdict(target, identity.allowlist);
      if (!listed.allowed) return { refusal: { status: 403, reason: listed.reason } };
      let addresses: readonly string[];
      if (target.ip !== undefined) {
        addresses = [target.host];
      } else {
        if (lookupsInFlight >= MAX_LOOKUPS_IN_FLIGHT) {
          return { refusal: { status: 503, reason: 'too many DNS lookups in flight' } };
        }
        lookupsInFlight += 1;
        const pending = lookup(target.host).finally(() => {
          lookupsInFlight -= 1;
        });
        pending.catch(() => undefined); // a lookup outliving its timeout settles unobserved, still counted
        try {
          // The agent controls the name and may control its DNS answers: they are checked below, and used as is.
          const found = await withTimeout(pending, dnsTimeoutMs, 'ETIMEOUT');
          addresses = found.map((entry) => entry.address);
        } catch (error) {
          const code = errorCode(error);
          const reason =
            code === 'ETIMEOUT'
              ? `DNS timeout (no answer within ${dnsTimeoutMs / 1000} s)`
              : `DNS lookup failed (${code})`;
          return { refusal: { status: 502, reason } };
        }
        if (addresses.length === 0)
          return { refusal: { status: 502, reason: 'DNS lookup found no address' } };
      }
      // Read after the lookup, just before connecting: the host's addresses as they are now.
      const ownRanges = [...hostRanges(), ...platformAddresses];
      for (const address of addresses) {
        const verdict = destinationVerdict(address, allow, ownRanges);
        if (!verdict.allowed) {
          const reason = target.ip === undefined ? `resolves to a ${verdict.reason}` : verdict.reason;
          return { refusal: { status: 403, reason } };
        }
      }
      // The checked addresses themselves, in order: the name is never resolved again (no DNS rebinding).
      let failure = 'ECONNREFUSED';
      for (const address of addresses) {
        if (closed) break;
        try {
          const socket = await connectTo(address, target.port);
          if (!closed) return { socket };
          socket.destroy();
        } catch (error) {
          failure = errorCode(error);
        }
      }
      if (closed) return { refusal: { status: 503, reason: 'the egress listener closed' } };
      const reason = failure === 'ETIMEDOUT' ? 'connect timed out' : `connect failed (${failure})`;
      return { refusal: { status: 502, reason } };
    }

    /** Admits one tunnel or request against the per-listener cap; undefined when it is full. */
    function admit(): (() => void) | undefined {
      if (active >= MAX_TUNNELS) return undefined;
      active += 1;
      return () => {
        active -= 1;
      };
    }

    async function handleConnect(req: IncomingMessage, agent: Duplex, head: Buffer): Promise<void> {
      const started = start();
      const target = parseConnectTarget(req.url ?? '');
      if (target === undefined) {
        release(agent, plainResponse(400, 'CONNECT needs a host:port target'));
        return;
      }
      const done = admit();
      if (done === undefined) {
        release(agent, plainResponse(503, `too many open connections (${MAX_TUNNELS})`));
        record(target, 'CONNECT', started, refused(`too many open connections (${MAX_TUNNELS})`));
        return;
      }
      try {
        const opened = await open(target);
        if ('refusal' in opened) {
          release(agent, plainResponse(opened.refusal.status, opened.refusal.reason));
          record(target, 'CONNECT', started, refused(opened.refusal.reason));
          return;
        }
        const upstream = opened.socket;
        // Its 'close' has been and gone: splice() would wait for it forever.
        if (agent.destroyed) {
          upstream.destroy();
          record(target, 'CONNECT', started, { ...refused(HUNG_UP), allowed: true });
          return;
        }
        agent.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length > 0) upstream.write(head);
        const failure = await splice(agent, upstream);
        record(target, 'CONNECT', started, {
          allowed: true,
          reason: failure,
          bytesOut: upstream.bytesWritten,
          bytesIn: upstream.bytesRead,
        });
      } finally {
        done();
      }
    }

    async function handleRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
      const started = start();
      res.on('error', noop);
      const parsed = parseHttpTarget(req.url ?? '');
      if (!parsed.ok) {
        sendPlain(res, 400, parsed.reason);
        if (parsed.target !== undefined) record(parsed.target, 'HTTP', started, refused(parsed.reason));
        return;
      }
      const done = admit();
      if (done === undefined) {
        sendPlain(res, 503, `too many open connections (${MAX_TUNNELS})`);
        record(parsed.target, 'HTTP', started, refused(`too many open connections (${MAX_TUNNELS})`));
        return;
      }
      try {
        const opened = await open(parsed.target);
        if ('refusal' in opened) {
          sendPlain(res, opened.refusal.status, opened.refusal.reason);
          record(parsed.target, 'HTTP', started, refused(opened.refusal.reason));
          return;
        }
        const upstream = opened.socket;
        // Its 'close' has been and gone: forward() would wait for it forever.
        if (res.destroyed) {
          upstream.destroy();
          record(parsed.target, 'HTTP', started, { ...refused(HUNG_UP), allowed: true });
          return;
        }
        const failure = await forward(req, res, upstream, parsed.path, parsed.authority);
        record(parsed.target, 'HTTP', started, {
          allowed: true,
          reason: failure,
          bytesOut: upstream.bytesWritten,
          bytesIn: upstream.bytesRead,
        });
      } finally {
        done();
      }
    }

    const server = http.createServer({
      maxHeaderSize: MAX_HEAD_BYTES,
      headersTimeout: HEAD_TIMEOUT_MS,
      // Bodies may stream for as long as bytes keep moving; the idle timeout ends stalled ones.
      requestTimeout: 0,
      connectionsCheckingInterval: 1000,
      // The target is the absolute URL or CONNECT authority; the agent's Host header is replaced.
      requireHostHeader: false,
    });
    server.maxConnections = MAX_AGENT_CONNECTIONS;
    server.setTimeout(IDLE_TIMEOUT_MS);
    server.on('connection', (socket: net.Socket) => adopt(socket));
    server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      run(() => handleConnect(req, socket, head)),
    );
    server.on('request', (req: IncomingMessage, res: ServerResponse) => run(() => handleRequest(req, res)));
    server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
      // The head is attacker-controlled bytes: answered with a fixed reason, never echoed, never logged.
      if (error.code === 'ECONNRESET' || !socket.writable) {
        socket.destroy();
        return;
      }
      const reason =
        error.code === 'HPE_HEADER_OVERFLOW'
          ? `request head larger than ${MAX_HEAD_BYTES / 1024} KiB`
          : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? `request head not complete within ${HEAD_TIMEOUT_MS / 1000} s`
            : 'malformed request: expected CONNECT host:port or an absolute http:// URL';
      release(socket, plainResponse(400, reason));
    });

    // In the instance's host directory, bound through a checked descriptor (host-sockets.ts);
    // mode 0666: the sandbox's unprivileged uid connects to it through a read-only bind.
    await listenHostSocket(path.dirname(socketPath), path.basename(socketPath), 0o666, server);
    server.on('error', (error) => log.error({ err: { code: errorCode(error) } }, 'egress listener error'));
    log.debug({ socketPath }, 'egress listener open');

    return {
      async close() {
        if (closed) return;
        closed = true;
        const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
        for (const socket of sockets) socket.destroy();
        await removeHostSocket(socketPath);
        await stopped;
        while (inFlight.size > 0) await Promise.all(inFlight);
        await recorder.drain();
        log.debug({ socketPath }, 'egress listener closed');
      },
    };
  }

  return { listen };
}

interface Started {
  readonly at: Date;
  readonly clock: number;
}

type Outcome = Pick<EgressRecord, 'allowed' | 'reason' | 'bytesOut' | 'bytesIn'>;

const start = (): Started => ({ at: new Date(), clock: performance.now() });
const refused = (reason: string): Outcome => ({ allowed: false, reason, bytesOut: 0, bytesIn: 0 });
const HUNG_UP = 'the agent hung up before the connection was made';

/**
 * Pipes a CONNECT tunnel both ways until both sides have closed. Resolves
 * with why it ended abnormally (an error or the idle timeout), or undefined.
 */
function splice(agent: Duplex, upstream: net.Socket): Promise<string | undefined> {
  return new Promise((resolve) => {
    let failure: string | undefined;
    const abort = (why: string) => {
      failure ??= why;
      agent.destroy();
      upstream.destroy();
    };
    agent.on('error', (error) => abort(`agent connection error (${errorCode(error)})`));
    upstream.on('error', (error) => abort(`destination error (${errorCode(error)})`));
    const idle = () => abort('idle timeout');
    if (agent instanceof net.Socket) agent.setTimeout(IDLE_TIMEOUT_MS, idle);
    upstream.setTimeout(IDLE_TIMEOUT_MS, idle);
    agent.pipe(upstream);
    upstream.pipe(agent);
    let open = 2;
    const closed = (other: Duplex) => () => {
      release(other);
      open -= 1;
      if (open === 0) resolve(failure);
    };
    agent.once('close', closed(upstream));
    upstream.once('close', closed(agent));
  });
}

/**
 * Forwards one plain-HTTP request to an open upstream socket in origin form,
 * hop-by-hop and proxy headers stripped and Host set from the URL, streaming
 * both bodies. One request per upstream connection (Connection: close).
 * Resolves once the response and the upstream socket are done, with why it
 * ended abnormally, or undefined.
 */
function forward(
  req: IncomingMessage,
  res: ServerResponse,
  upstream: net.Socket,
  path: string,
  authority: string,
): Promise<string | undefined> {
  return new Promise((resolve) => {
    let failure: string | undefined;
    // The agent's headers go to the destination it chose; only connection-level ones are dropped.
    const headers = [...endToEndHeaders(req.rawHeaders, ['host', 'content-length']), 'Host', authority];
    if (req.headers['transfer-encoding'] !== undefined) headers.push('Transfer-Encoding', 'chunked');
    else if (req.headers['content-length'] !== undefined)
      headers.push('Content-Length', req.headers['content-length']);
    headers.push('Connection', 'close');
    const outgoing = http.request({
      createConnection: () => upstream,
      method: req.method ?? 'GET',
      path,
      headers,
      setHost: false,
    });
    upstream.setTimeout(IDLE_TIMEOUT_MS, () => {
      failure ??= 'idle timeout';
      outgoing.destroy();
      res.destroy();
    });
    outgoing.on('error', (error) => {
      failure ??= `destination error (${errorCode(error)})`;
      if (res.headersSent) res.destroy();
      else sendPlain(res, 502, 'the destination failed before answering');
    });
    outgoing.on('response', (incoming) => {
      res.writeHead(incoming.statusCode ?? 502, incoming.statusMessage, endToEndHeaders(incoming.rawHeaders));
      incoming.pipe(res);
      incoming.on('close', () => {
        if (!incoming.complete) {
          failure ??= 'destination closed mid-response';
          res.destroy();
        }
      });
    });
    req.pipe(outgoing);
    let open = 2;
    const closed = () => {
      open -= 1;
      if (open === 0) resolve(failure);
    };
    res.once('close', () => {
      // The agent went away before the whole response reached it: nothing left to deliver it to.
      if (!res.writableFinished) {
        failure ??= 'agent closed the connection';
        outgoing.destroy();
        upstream.destroy();
      }
      closed();
    });
    upstream.once('close', closed);
  });
}
