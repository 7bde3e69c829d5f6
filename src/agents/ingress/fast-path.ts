import { STATUS_CODES } from 'node:http';
import type net from 'node:net';
import { connectHostSocket } from '../runtime/host-sockets.ts';
import { requestHeadText, responseHeadText } from './headers.ts';
import {
  type BodyReader,
  type BodyStep,
  BrokenFraming,
  bodyReader,
  type Framing,
  headEnd,
  headText,
  MAX_HEAD_BYTES,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
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
  /** The running instance's agent id for a subdomain if a lookup still valid says so, else undefined (then runningAgent). */
  cachedAgent(subdomain: string): string | undefined;
  /** The running instance's agent id for a subdomain, or undefined (then Node's path answers). */
  runningAgent(subdomain: string): Promise<string | undefined>;
  socketOf(agentId: string): string;
  /** The client's address, judged from the socket's peer and the X-Forwarded-For it sent (if any). */
  clientAddress(client: net.Socket, forwardedFor: string | undefined): string;
  instanceHost(subdomain: string): string;
  /** One access line: the request's method, the status answered, the agent reached (if any), the milliseconds taken. */
  log(method: string, status: number, agentId: string | undefined, ms: number): void;
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
  /** The head's bytes as received (the first headLength of headFrom), given back if the connection is handed to Node before anything is sent. */
  readonly headFrom: Buffer;
  readonly headLength: number;
  readonly subdomain: string;
  readonly started: number;
  // Every field is set from the start (undefined until known): one object shape for every exchange.
  agentId: string | undefined;
  committed: boolean;
  bodyLeft: number;
  /** Response bytes read before its head ended. */
  responseHead: Buffer;
  status: number | undefined;
  reader: BodyReader | undefined;
  framing: Framing | undefined;
  keepsOpenMs: number | undefined;
  responded: boolean;
}

interface Upstream {
  readonly socket: net.Socket;
  readonly agentId: string;
  /** Moved on by every read and write: a connection with no bytes either way for idleTimeoutMs is closed. */
  readonly idle: Deadline;
  /** Past this moment (performance.now()) the instance may be closing its end: a new connection is opened. */
  reuseUntil: number;
}

/** A connection is not reused this close to the end of the idle time the instance announced. */
const REUSE_MARGIN_MS = 1000;
/** A response body up to this long is written with its head as one string; a longer one beside it. */
const SMALL_BODY = 1024;

const STATUS_LINES = new Map<number, string>();

/** The status line the client receives (HTTP/1.1, the standard reason), made once per status. */
function statusLine(status: number): string {
  let line = STATUS_LINES.get(status);
  if (line === undefined) {
    line = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}`;
    STATUS_LINES.set(status, line);
  }
  return line;
}

/**
 * A timeout that each request moves without a timer of its own: arming sets the deadline, and
 * the one timer, when it fires before it (the deadline moved on), waits out the rest. Only a
 * deadline earlier than the timer's sets a new timer.
 */
class Deadline {
  /** When `expired` is due (performance.now() time); infinite while cleared. */
  private at = Number.POSITIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private readonly expired: () => void;

  constructor(expired: () => void) {
    this.expired = expired;
  }

  /** `expired` is called `ms` after `now` unless the deadline is cleared or moved first. */
  arm(now: number, ms: number): void {
    this.at = now + ms;
    if (this.at < this.timerAt) this.schedule(now);
  }

  clear(): void {
    this.at = Number.POSITIVE_INFINITY;
  }

  /** Clears the deadline and its timer (the connection is done). */
  stop(): void {
    this.clear();
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  private schedule(now: number): void {
    clearTimeout(this.timer);
    this.timerAt = this.at;
    this.timer = setTimeout(this.fire, this.at - now);
  }

  private readonly fire = (): void => {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    if (this.at === Number.POSITIVE_INFINITY) return;
    const now = performance.now();
    if (now < this.at) {
      this.schedule(now);
      return;
    }
    this.clear();
    this.expired();
  };
}

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
    // Waiting for a request head: the first within headMs, each next within keepAliveMs of the last answer.
    const waiting = new Deadline(() => client.destroy());
    // Waiting for the instance's answer once the whole request is with it.
    const answering = new Deadline(() => {
      const current = exchange;
      if (current?.committed !== true || current.status !== undefined || current.responded) return;
      fail(current, deps.gatewayTimeout, 504);
    });
    waiting.arm(performance.now(), timeouts.headMs);
    const keepAlive = `keep-alive: timeout=${Math.floor(timeouts.keepAliveMs / 1000)}\r\n`;
    const logged = (current: Exchange, status: number, now: number): void =>
      deps.log(current.head.method, status, current.agentId, Math.round(now - current.started));

    const onData = (chunk: Buffer): void => {
      if (exchange?.committed === true && exchange.bodyLeft > 0) {
        const take = Math.min(exchange.bodyLeft, chunk.length);
        exchange.bodyLeft -= take;
        upstream?.idle.arm(performance.now(), deps.idleTimeoutMs);
        const sent = upstream?.socket.write(chunk.subarray(0, take)) ?? true;
        if (!sent) {
          client.pause();
          upstream?.socket.once('drain', () => client.resume());
        }
        if (exchange.bodyLeft === 0) requestSent(exchange, performance.now());
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
      waiting.stop();
      answering.stop();
      // Cut short: the instance's side of it ends too.
      if (exchange?.committed === true && !exchange.responded) {
        logged(exchange, exchange.status ?? 499, performance.now());
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
      waiting.stop();
      answering.stop();
      open.delete(client);
      upstream?.socket.destroy();
      upstream = undefined;
      const bytes =
        exchange === undefined
          ? unread
          : Buffer.concat([exchange.headFrom.subarray(0, exchange.headLength), unread]);
      exchange = undefined;
      client.pause();
      handOver(bytes);
    }

    function nextRequest(): void {
      const text = headText(unread);
      const end = headEnd(text);
      if (end === -1) {
        if (unread.length > MAX_HEAD_BYTES) release();
        return;
      }
      const head = parseRequestHead(text, end);
      const subdomain =
        head === undefined || deps.closing() ? undefined : subdomainOf(head.host, deps.agentsDomain);
      if (head === undefined || subdomain === undefined || subdomain === 'malformed') {
        release();
        return;
      }
      waiting.clear();
      const started = performance.now();
      const current: Exchange = {
        head,
        headFrom: unread,
        headLength: end,
        subdomain,
        started,
        agentId: undefined,
        committed: false,
        bodyLeft: head.contentLength,
        responseHead: NO_BYTES,
        status: undefined,
        reader: undefined,
        framing: undefined,
        keepsOpenMs: undefined,
        responded: false,
      };
      exchange = current;
      unread = end === unread.length ? NO_BYTES : unread.subarray(end);
      // A name looked up a moment ago, on the connection already open to its instance: no wait at all.
      const agentId = deps.cachedAgent(subdomain);
      const pinned = upstream;
      if (
        agentId !== undefined &&
        pinned !== undefined &&
        pinned.agentId === agentId &&
        !pinned.socket.destroyed &&
        started < pinned.reuseUntil
      ) {
        current.agentId = agentId;
        commit(current, pinned, started);
        return;
      }
      begin(current, agentId).catch(() => {
        if (!released && exchange === current && !current.committed) release();
      });
    }

    /** Routes `current` (by `known`, a cached lookup, or else by asking) over a connection that may have to be opened. */
    async function begin(current: Exchange, known: string | undefined): Promise<void> {
      const agentId = known ?? (await deps.runningAgent(current.subdomain));
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
        pinned = attachUpstream(socket, agentId);
        upstream = pinned;
      }
      commit(current, pinned, performance.now());
    }

    function commit(current: Exchange, pinned: Upstream, now: number): void {
      current.committed = true;
      const { socket } = pinned;
      pinned.idle.arm(now, deps.idleTimeoutMs);
      const { head } = current;
      const text = requestHeadText(`${head.method} ${head.target} HTTP/1.1`, head, {
        host: head.host.toLowerCase(),
        clientAddress:
          head.forwardedFor === undefined ? peerAddress : deps.clientAddress(client, head.forwardedFor),
        proto: deps.proto ?? 'http',
      });
      const take = Math.min(current.bodyLeft, unread.length);
      current.bodyLeft -= take;
      if (take === 0) socket.write(text, 'latin1');
      else {
        // Head and the body received with it in one write.
        socket.cork();
        socket.write(text, 'latin1');
        socket.write(unread.subarray(0, take));
        socket.uncork();
        unread = take === unread.length ? NO_BYTES : unread.subarray(take);
      }
      if (current.bodyLeft === 0) requestSent(current, now);
    }

    /** The whole request is with the instance: its answer's head must follow in time. */
    function requestSent(current: Exchange, now: number): void {
      if (current.responded) {
        finished(current, now);
        return;
      }
      if (current.status !== undefined) return;
      answering.arm(now, deps.headTimeoutMs);
    }

    /** Answers a committed exchange that got no response head, and closes the client connection. */
    function fail(current: Exchange, answer: Buffer, status: number): void {
      current.responded = true;
      answering.clear();
      logged(current, status, performance.now());
      upstream?.socket.destroy();
      closeAfter(answer);
    }

    function attachUpstream(socket: net.Socket, agentId: string): Upstream {
      const idle = new Deadline(() => {
        socket.destroy();
        if (exchange?.committed === true && exchange.status !== undefined) client.destroy();
      });
      idle.arm(performance.now(), deps.idleTimeoutMs);
      socket.on('data', (chunk: Buffer) => {
        const now = performance.now();
        idle.arm(now, deps.idleTimeoutMs);
        const current = exchange;
        // Bytes with no request waiting for them would be passed off as the next answer: never forwarded.
        if (current === undefined || !current.committed || current.responded) return void socket.destroy();
        try {
          fromInstance(current, socket, chunk, now);
        } catch (error) {
          if (!(error instanceof BrokenFraming)) throw error;
          socket.destroy();
          client.destroy();
        }
      });
      socket.on('error', () => socket.destroy());
      socket.on('close', () => {
        idle.stop();
        // A connection to another instance, dropped when the client's next request named this one.
        if (upstream?.socket !== socket) return;
        upstream = undefined;
        const current = exchange;
        if (current === undefined || !current.committed || current.responded) return;
        if (current.status === undefined) return fail(current, deps.badGateway, 502);
        if (current.framing?.kind === 'close') {
          current.responded = true;
          logged(current, current.status, performance.now());
          closeAfter(NO_BYTES);
          return;
        }
        // A response cut short by the instance is cut short for the client too (never passed off as whole).
        client.destroy();
      });
      return { socket, agentId, idle, reuseUntil: Number.POSITIVE_INFINITY };
    }

    function fromInstance(current: Exchange, socket: net.Socket, chunk: Buffer, now: number): void {
      let head = '';
      let body = chunk;
      /** `body` as latin1 text, as far as it was read as text with the head. */
      let bodyText = '';
      if (current.reader === undefined) {
        let pending: Buffer =
          current.responseHead.length === 0 ? chunk : Buffer.concat([current.responseHead, chunk]);
        for (;;) {
          const text = headText(pending);
          const end = headEnd(text);
          if (end === -1) {
            if (pending.length > MAX_HEAD_BYTES) fail(current, deps.badGateway, 502);
            else current.responseHead = pending;
            return;
          }
          const response = parseResponseHead(text, end, current.head.method);
          if (response === undefined || response.status === 101) {
            fail(current, deps.badGateway, 502);
            return;
          }
          pending = pending.subarray(end);
          // Interim answers (100, 103) are not passed on, as Node's path does not.
          if (response.status < 200) continue;
          answering.clear();
          current.responseHead = NO_BYTES;
          current.status = response.status;
          current.framing = response.framing;
          current.keepsOpenMs = response.keepsOpenMs;
          current.reader = bodyReader(response.framing);
          // A body that ends with the connection ends this one too; else the client may keep it.
          const closes = response.framing.kind === 'close' || current.head.close;
          head = responseHeadText(
            statusLine(response.status),
            response,
            deps.instanceHost(current.subdomain),
            response.framing.kind === 'chunked' ? CHUNKED_KEPT : NOTHING_KEPT,
            closes ? 'connection: close\r\n' : keepAlive,
          );
          body = pending;
          bodyText = text.slice(end);
          break;
        }
      }
      let step: BodyStep;
      try {
        step = current.reader.step(body, 0);
      } catch (error) {
        // Nothing of this response has reached the client yet: it can still be told plainly.
        if (!(error instanceof BrokenFraming) || head === '') throw error;
        fail(current, deps.badGateway, 502);
        return;
      }
      const { used } = step;
      let sent: boolean;
      if (head === '')
        sent = used === 0 || client.write(used === body.length ? body : body.subarray(0, used));
      else if (used <= SMALL_BODY) {
        // A small body goes with its head as one string (latin1: byte for byte).
        sent = client.write(
          head + (used <= bodyText.length ? bodyText.slice(0, used) : body.toString('latin1', 0, used)),
          'latin1',
        );
      } else {
        client.cork();
        client.write(head, 'latin1');
        sent = client.write(body.subarray(0, used));
        client.uncork();
      }
      if (!step.ended) {
        if (!sent) {
          socket.pause();
          client.once('drain', () => socket.resume());
        }
        return;
      }
      current.responded = true;
      logged(current, current.status ?? 0, now);
      // Bytes past the response's end: this connection to the instance is not trusted with another request.
      // Nor one the instance closes or is about to close: a request written as it closes would fail.
      if (used < body.length || current.keepsOpenMs === 0) socket.destroy();
      else if (upstream?.socket === socket && current.keepsOpenMs !== undefined) {
        upstream.reuseUntil = now + current.keepsOpenMs - REUSE_MARGIN_MS;
      }
      if (current.bodyLeft === 0) finished(current, now);
    }

    /** Request and response are both complete: the connection carries the next request, if any. */
    function finished(current: Exchange, now: number): void {
      if (exchange !== current) return;
      exchange = undefined;
      if (current.head.close || current.framing?.kind === 'close') {
        closeAfter(NO_BYTES);
        return;
      }
      waiting.arm(now, timeouts.keepAliveMs);
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
