import { STATUS_CODES } from 'node:http';
import type net from 'node:net';
import { connectHostSocket } from '../runtime/host-sockets.ts';
import { requestHeaders, responseHeaders } from './headers.ts';
import {
  type BodyReader,
  type BodyStep,
  BrokenFraming,
  bodyReader,
  type Framing,
  headEnd,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
  serializeHead,
} from './raw-http.ts';
import { subdomainOf } from './subdomain.ts';

// AGT-3: the ingress's fast path. Node's HTTP objects cost a proxy more than
// the hop itself (every request and response parsed and serialized twice), so
// a client connection starts here: its request head is read (raw-http.ts: a
// strict subset), checked and routed exactly as proxy.ts would, the rewritten
// head goes to a connection to the instance pinned to this client connection,
// and the body and the response pass as bytes, the response head rewritten
// and its framing followed, so every response ends where the client will
// think it does. Each request head on the connection is read and routed in
// turn. Anything else — a head outside the subset, a Host the ingress does
// not serve at once (the platform's, an unknown or stopped name), a refused
// connect, the server closing — hands the connection with its unread bytes,
// at a request boundary, to Node's HTTP server, which answers it as before.

export interface FastPathDeps {
  readonly agentsDomain: string;
  /** The scheme clients use; undefined: this socket's (plain HTTP here). */
  readonly proto: 'http' | 'https' | undefined;
  /** The running instance's agent id for a subdomain, or undefined (then Node's path answers). */
  runningAgent(subdomain: string): Promise<string | undefined>;
  socketOf(agentId: string): string;
  /** The client's address, judged from the socket's peer and the X-Forwarded-For it sent (if any). */
  clientAddress(client: net.Socket, forwardedFor: string | undefined): string;
  instanceHost(subdomain: string): string;
  log(method: string, status: number, agentId: string | undefined, started: number): void;
  closing(): boolean;
  /** Whole answers (head and body, `connection: close`) for an instance that fails mid-request. */
  readonly badGateway: Buffer;
  readonly gatewayTimeout: Buffer;
  readonly headTimeoutMs: number;
  readonly idleTimeoutMs: number;
}

export interface ConnectionTimeouts {
  /** A client has this long to send a complete request head. */
  readonly headMs: number;
  /** An idle kept-alive client connection is closed after this long. */
  readonly keepAliveMs: number;
}

export interface FastPath {
  /** Serves `client` until it closes or is handed, with the bytes read and not used, to `handOver`. */
  accept(client: net.Socket, timeouts: ConnectionTimeouts, handOver: (unread: Buffer) => void): void;
  /** Ends every connection still served here (server shutdown). */
  close(): void;
}

const NO_BYTES: Buffer = Buffer.alloc(0);
const NOTHING_KEPT: ReadonlySet<string> = new Set();
// A chunked body passes as its bytes: the header that says so stays.
const CHUNKED_KEPT: ReadonlySet<string> = new Set(['transfer-encoding']);

interface Exchange {
  readonly head: RequestHead;
  /** The head's bytes as received, given back if the connection is handed to Node before anything is sent. */
  readonly headBytes: Buffer;
  readonly subdomain: string;
  readonly started: number;
  agentId?: string;
  committed: boolean;
  bodyLeft: number;
  /** Response bytes read before its head ended. */
  responseHead: Buffer;
  status?: number;
  reader?: BodyReader;
  framing?: Framing;
  keepsOpenMs?: number | undefined;
  responded: boolean;
  headTimer?: NodeJS.Timeout;
}

interface Upstream {
  readonly socket: net.Socket;
  readonly agentId: string;
  /** Past this moment (performance.now()) the instance may be closing its end: a new connection is opened. */
  reuseUntil: number;
}

/** A connection is not reused this close to the end of the idle time the instance announced. */
const REUSE_MARGIN_MS = 1000;

export function createFastPath(deps: FastPathDeps): FastPath {
  const open = new Set<net.Socket>();

  function accept(
    client: net.Socket,
    timeouts: ConnectionTimeouts,
    handOver: (unread: Buffer) => void,
  ): void {
    open.add(client);
    // Judged once for requests without X-Forwarded-For: reading the peer's address asks the kernel.
    const peerAddress = deps.clientAddress(client, undefined);
    let unread: Buffer = NO_BYTES;
    let exchange: Exchange | undefined;
    let upstream: Upstream | undefined;
    let released = false;
    let waitTimer = setTimeout(() => client.destroy(), timeouts.headMs);

    const onData = (chunk: Buffer): void => {
      if (exchange?.committed === true && exchange.bodyLeft > 0) {
        const take = Math.min(exchange.bodyLeft, chunk.length);
        exchange.bodyLeft -= take;
        const sent = upstream?.socket.write(chunk.subarray(0, take)) ?? true;
        if (!sent) {
          client.pause();
          upstream?.socket.once('drain', () => client.resume());
        }
        if (exchange.bodyLeft === 0) requestSent(exchange);
        chunk = chunk.subarray(take);
        if (chunk.length === 0) return;
      }
      unread = unread.length === 0 ? chunk : Buffer.concat([unread, chunk]);
      if (exchange === undefined) nextRequest();
      // A client sending ahead of its answers (pipelining) is held once a head's worth waits.
      else if (unread.length > MAX_HEAD_BYTES) client.pause();
    };
    const onEnd = (): void => {
      // A client that stops sending has gone away (as Node's server treats it): no answer is owed.
      client.destroy();
    };
    const onError = (): void => {
      client.destroy();
    };
    const onClose = (): void => {
      open.delete(client);
      clearTimeout(waitTimer);
      if (exchange !== undefined) {
        clearTimeout(exchange.headTimer);
        // Cut short: the instance's side of it ends too.
        if (exchange.committed && !exchange.responded) {
          deps.log(exchange.head.method, exchange.status ?? 499, exchange.agentId, exchange.started);
        }
      }
      upstream?.socket.destroy();
    };
    client.on('data', onData);
    client.on('end', onEnd);
    client.on('error', onError);
    client.on('close', onClose);

    /** Ends the client connection once `last` is written (the client may not close its side). */
    function closeAfter(last: Buffer): void {
      // Whatever the client sends from now on is not read as a request.
      client.off('data', onData);
      client.end(last, () => client.destroy());
    }

    /** Gives the connection to Node's server, at a request boundary, with every byte not yet used. */
    function release(): void {
      released = true;
      client.off('data', onData);
      client.off('end', onEnd);
      client.off('error', onError);
      client.off('close', onClose);
      clearTimeout(waitTimer);
      open.delete(client);
      upstream?.socket.destroy();
      upstream = undefined;
      const bytes = exchange === undefined ? unread : Buffer.concat([exchange.headBytes, unread]);
      exchange = undefined;
      client.pause();
      handOver(bytes);
    }

    function nextRequest(): void {
      const end = headEnd(unread);
      if (end === -1) {
        if (unread.length > MAX_HEAD_BYTES) release();
        return;
      }
      const head = parseRequestHead(unread, end);
      const subdomain =
        head === undefined || deps.closing() ? undefined : subdomainOf(head.host, deps.agentsDomain);
      if (head === undefined || subdomain === undefined || subdomain === 'malformed') {
        release();
        return;
      }
      clearTimeout(waitTimer);
      const started = performance.now();
      const current: Exchange = {
        head,
        headBytes: unread.subarray(0, end),
        subdomain,
        started,
        committed: false,
        bodyLeft: head.contentLength,
        responseHead: NO_BYTES,
        responded: false,
      };
      exchange = current;
      unread = unread.subarray(end);
      begin(current).catch(() => {
        if (!released && exchange === current && !current.committed) release();
      });
    }

    async function begin(current: Exchange): Promise<void> {
      const agentId = await deps.runningAgent(current.subdomain);
      if (client.destroyed || released) return;
      // Not running, or unknown: Node's path asks again and answers the one 404.
      if (agentId === undefined) return release();
      current.agentId = agentId;
      let pinned = upstream;
      if (
        pinned === undefined ||
        pinned.agentId !== agentId ||
        pinned.socket.destroyed ||
        performance.now() >= pinned.reuseUntil
      ) {
        upstream?.socket.destroy();
        upstream = undefined;
        let socket: net.Socket;
        try {
          socket = await connectHostSocket(deps.socketOf(agentId));
        } catch {
          // Refused or untrusted: Node's path tries again and answers (404, or 502) as it always did.
          if (!client.destroyed && !released) release();
          return;
        }
        if (client.destroyed || released) {
          socket.destroy();
          return;
        }
        pinned = { socket, agentId, reuseUntil: Number.POSITIVE_INFINITY };
        upstream = pinned;
        attachUpstream(socket);
      }
      commit(current, pinned.socket);
    }

    function commit(current: Exchange, socket: net.Socket): void {
      current.committed = true;
      const { head } = current;
      const headers = requestHeaders(head.raw, {
        host: head.host.toLowerCase(),
        clientAddress:
          head.forwardedFor === undefined ? peerAddress : deps.clientAddress(client, head.forwardedFor),
        proto: deps.proto ?? 'http',
      });
      const bytes = serializeHead(`${head.method} ${head.target} HTTP/1.1`, headers);
      const take = Math.min(current.bodyLeft, unread.length);
      current.bodyLeft -= take;
      socket.write(take === 0 ? bytes : Buffer.concat([bytes, unread.subarray(0, take)]));
      unread = unread.subarray(take);
      if (current.bodyLeft === 0) requestSent(current);
    }

    /** The whole request is with the instance: its answer's head must follow in time. */
    function requestSent(current: Exchange): void {
      if (current.responded) {
        finished(current);
        return;
      }
      if (current.status !== undefined) return;
      current.headTimer = setTimeout(() => {
        if (current.status !== undefined || exchange !== current) return;
        fail(current, deps.gatewayTimeout, 504);
      }, deps.headTimeoutMs);
    }

    /** Answers a committed exchange that got no response head, and closes the client connection. */
    function fail(current: Exchange, answer: Buffer, status: number): void {
      current.responded = true;
      deps.log(current.head.method, status, current.agentId, current.started);
      upstream?.socket.destroy();
      closeAfter(answer);
    }

    function attachUpstream(socket: net.Socket): void {
      socket.setTimeout(deps.idleTimeoutMs, () => {
        socket.destroy();
        if (exchange?.committed === true && exchange.status !== undefined) client.destroy();
      });
      socket.on('data', (chunk: Buffer) => {
        const current = exchange;
        // Bytes with no request waiting for them would be passed off as the next answer: never forwarded.
        if (current === undefined || !current.committed || current.responded) return void socket.destroy();
        try {
          fromInstance(current, socket, chunk);
        } catch (error) {
          if (!(error instanceof BrokenFraming)) throw error;
          socket.destroy();
          client.destroy();
        }
      });
      socket.on('error', () => socket.destroy());
      socket.on('close', () => {
        // A connection to another instance, dropped when the client's next request named this one.
        if (upstream?.socket !== socket) return;
        upstream = undefined;
        const current = exchange;
        if (current === undefined || !current.committed || current.responded) return;
        if (current.status === undefined) return fail(current, deps.badGateway, 502);
        if (current.framing?.kind === 'close') {
          current.responded = true;
          deps.log(current.head.method, current.status, current.agentId, current.started);
          closeAfter(NO_BYTES);
          return;
        }
        // A response cut short by the instance is cut short for the client too (never passed off as whole).
        client.destroy();
      });
    }

    function fromInstance(current: Exchange, socket: net.Socket, chunk: Buffer): void {
      let out: Buffer[] = [];
      let body = chunk;
      if (current.reader === undefined) {
        let pending: Buffer =
          current.responseHead.length === 0 ? chunk : Buffer.concat([current.responseHead, chunk]);
        for (;;) {
          const end = headEnd(pending);
          if (end === -1) {
            if (pending.length > MAX_HEAD_BYTES) fail(current, deps.badGateway, 502);
            else current.responseHead = pending;
            return;
          }
          const head = parseResponseHead(pending, end, current.head.method);
          if (head === undefined || head.status === 101) {
            fail(current, deps.badGateway, 502);
            return;
          }
          pending = pending.subarray(end);
          // Interim answers (100, 103) are not passed on, as Node's path does not.
          if (head.status < 200) continue;
          clearTimeout(current.headTimer);
          current.responseHead = NO_BYTES;
          current.status = head.status;
          current.framing = head.framing;
          current.keepsOpenMs = head.keepsOpenMs;
          current.reader = bodyReader(head.framing);
          const headers = responseHeaders(
            head.raw,
            deps.instanceHost(current.subdomain),
            head.framing.kind === 'chunked' ? CHUNKED_KEPT : NOTHING_KEPT,
          );
          // A body that ends with the connection ends this one too; else the client may keep it.
          const closes = head.framing.kind === 'close' || current.head.close;
          if (closes) headers.push('connection', 'close');
          else headers.push('keep-alive', `timeout=${Math.floor(timeouts.keepAliveMs / 1000)}`);
          out = [serializeHead(`HTTP/1.1 ${head.status} ${STATUS_CODES[head.status] ?? 'Unknown'}`, headers)];
          body = pending;
          break;
        }
      }
      let step: BodyStep;
      try {
        step = current.reader.step(body, 0);
      } catch (error) {
        // Nothing of this response has reached the client yet: it can still be told plainly.
        if (!(error instanceof BrokenFraming) || out.length === 0) throw error;
        fail(current, deps.badGateway, 502);
        return;
      }
      if (step.used > 0) out.push(step.used === body.length ? body : body.subarray(0, step.used));
      const sent = client.write(out.length === 1 ? (out[0] ?? NO_BYTES) : Buffer.concat(out));
      if (!step.ended) {
        if (!sent) {
          socket.pause();
          client.once('drain', () => socket.resume());
        }
        return;
      }
      current.responded = true;
      deps.log(current.head.method, current.status ?? 0, current.agentId, current.started);
      // Bytes past the response's end: this connection to the instance is not trusted with another request.
      // Nor one the instance closes or is about to close: a request written as it closes would fail.
      if (step.used < body.length || current.keepsOpenMs === 0) socket.destroy();
      else if (upstream?.socket === socket && current.keepsOpenMs !== undefined) {
        upstream.reuseUntil = performance.now() + current.keepsOpenMs - REUSE_MARGIN_MS;
      }
      if (current.bodyLeft === 0) finished(current);
    }

    /** Request and response are both complete: the connection carries the next request, if any. */
    function finished(current: Exchange): void {
      if (exchange !== current) return;
      exchange = undefined;
      if (current.head.close || current.framing?.kind === 'close') {
        closeAfter(NO_BYTES);
        return;
      }
      waitTimer = setTimeout(() => client.destroy(), timeouts.keepAliveMs);
      client.resume();
      if (unread.length > 0) nextRequest();
    }
  }

  return {
    accept,
    close() {
      for (const client of open) client.destroy();
      open.clear();
    },
  };
}
