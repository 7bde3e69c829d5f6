import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { listenHostSocket } from '../runtime/host-sockets.ts';
import { createFastPath, type FastPath } from './fast-path.ts';

// AGT-3: the fast path's timeouts are deadlines moved by each request, with
// one timer per kind and connection rather than one per request. The attack:
// a client holding connections open without sending (or an instance never
// answering) for longer than the timeouts allow, or a deadline that a busy
// connection stretches or cuts short.

const HEAD_MS = 1500; // a complete request head within this of connecting
const KEEP_ALIVE_MS = 300; // an idle kept-alive connection, from its last answer (shorter: its deadline comes first)
const ANSWER_MS = 250; // the instance's response head, from the request's end
const IDLE_MS = 300; // no bytes either way on the connection to the instance
/** Timers fire on a millisecond clock: a deadline met within this is met. */
const EARLY = 5;
const HOST = 'ecab12cd34.agents.localhost';

const dir = mkdtempSync(path.join(tmpdir(), 'enclave-fast-path-'));
const hostDir = path.join(dir, 'host');
const logged: number[] = [];
let fastPath: FastPath;
let instance: http.Server;
let server: net.Server;
let port = 0;

const answer = (status: number, text: string) =>
  Buffer.from(`HTTP/1.1 ${status} ${text}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);

before(async () => {
  mkdirSync(hostDir, { mode: 0o711 });
  instance = http.createServer((req, res) => {
    if (req.url === '/hang') return; // never answers
    if (req.url === '/trickle') {
      // A body a byte at a time, each within the idle time of the last.
      res.writeHead(200, { 'content-length': '6' });
      let sent = 0;
      const timer = setInterval(() => {
        res.write('x');
        if (++sent === 6) {
          clearInterval(timer);
          res.end();
        }
      }, IDLE_MS / 3);
      return;
    }
    if (req.url === '/stall') {
      res.writeHead(200, { 'content-length': '10' });
      res.write('12345'); // and then nothing
      return;
    }
    res.end('ok');
  });
  const socket = (await listenHostSocket(hostDir, 'ingress.sock', 0o600, instance)).path;
  fastPath = createFastPath({
    agentsDomain: 'agents.localhost',
    proto: undefined,
    cachedAgent: () => 'agent',
    runningAgent: async () => 'agent',
    socketOf: () => socket,
    clientAddress: (client) => client.remoteAddress ?? '',
    instanceHost: (subdomain) => `${subdomain}.agents.localhost`,
    log: (_method, status) => logged.push(status),
    closing: () => false,
    badGateway: answer(502, 'Bad Gateway'),
    gatewayTimeout: answer(504, 'Gateway Timeout'),
    headTimeoutMs: ANSWER_MS,
    idleTimeoutMs: IDLE_MS,
  });
  server = net.createServer((client) => {
    fastPath.accept(client, { headMs: HEAD_MS, keepAliveMs: KEEP_ALIVE_MS }, () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  fastPath.close();
  server.close();
  instance.closeAllConnections();
  instance.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A raw client connection: what it has received so far, and when it was closed. */
function connect() {
  const socket = net.connect(port, '127.0.0.1');
  const opened = performance.now();
  let received = '';
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
  });
  const closed = once(socket, 'close').then(() => performance.now());
  /** Resolves on the next bytes; rejects if the connection closes first. */
  const more = () =>
    Promise.race([
      once(socket, 'data'),
      closed.then(() => {
        throw new Error(`closed after ${JSON.stringify(received)}`);
      }),
    ]);
  return {
    socket,
    opened,
    closed,
    received: () => received,
    more,
    /** Sends a GET for `target` and waits for `count` answers in all on this connection. */
    async get(target: string, count: number): Promise<number> {
      socket.write(`GET ${target} HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`);
      const sent = performance.now();
      while ((received.match(/HTTP\/1\.1 \d{3} /g) ?? []).length < count) await more();
      return sent;
    },
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('AGT-3: a connection with no complete request head within the head time is closed, whether silent or part-way', async () => {
  const silent = connect();
  const partial = connect();
  partial.socket.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`);
  for (const client of [silent, partial]) {
    const after = (await client.closed) - client.opened;
    assert.ok(after >= HEAD_MS - EARLY && after < 4 * HEAD_MS, `closed after ${after} ms`);
    assert.equal(client.received(), '');
  }
});

test('AGT-3: a kept-alive connection is closed once idle for its keep-alive time after its last answer, and never while in use', async () => {
  // Idle after one answer: closed at its keep-alive time, though the head time it started with is longer.
  const single = connect();
  await single.get('/', 1);
  const answered = performance.now();
  const idle = (await single.closed) - answered;
  assert.ok(idle >= KEEP_ALIVE_MS - EARLY && idle < 3 * KEEP_ALIVE_MS, `closed ${idle} ms after its answer`);
  const client = connect();
  // In use for several keep-alive times: each answer moves the deadline on.
  const until = performance.now() + 3 * KEEP_ALIVE_MS;
  let count = 0;
  let lastAnswered = 0;
  while (performance.now() < until) {
    await client.get('/', ++count);
    lastAnswered = performance.now();
    await pause(KEEP_ALIVE_MS / 3);
  }
  const after = (await client.closed) - lastAnswered;
  assert.equal((client.received().match(/HTTP\/1\.1 200 /g) ?? []).length, count);
  assert.ok(
    after >= KEEP_ALIVE_MS - EARLY && after < 4 * KEEP_ALIVE_MS,
    `closed ${after} ms after its last answer`,
  );
});

test('AGT-3: an instance that sends no response head within the answer time gets the client a 504, also after answers in time on the same connection', async () => {
  const client = connect();
  // Answered requests for longer than the answer time: none of them is cut short.
  const until = performance.now() + 2 * ANSWER_MS;
  let count = 0;
  while (performance.now() < until) {
    await client.get('/', ++count);
    await pause(ANSWER_MS / 4);
  }
  const sent = await client.get('/hang', count + 1);
  const answered = performance.now() - sent;
  assert.match(client.received(), /HTTP\/1\.1 504 Gateway Timeout\r\n/);
  assert.equal((client.received().match(/HTTP\/1\.1 200 /g) ?? []).length, count);
  assert.ok(answered >= ANSWER_MS - EARLY && answered < 4 * ANSWER_MS, `504 after ${answered} ms`);
  await client.closed;
  assert.equal(logged.at(-1), 504);
});

test('AGT-3: a response that stops mid-body is cut off after the idle time; one that keeps trickling is not', async () => {
  const trickle = connect();
  await trickle.get('/trickle', 1);
  while (!trickle.received().endsWith('xxxxxx')) await trickle.more();
  assert.ok(!trickle.socket.destroyed);
  trickle.socket.destroy();

  const stalled = connect();
  await stalled.get('/stall', 1);
  while (!stalled.received().endsWith('12345')) await stalled.more();
  const stalledAt = performance.now();
  const after = (await stalled.closed) - stalledAt;
  assert.ok(after >= IDLE_MS - EARLY - 20 && after < 4 * IDLE_MS, `cut off after ${after} ms`);
  assert.ok(!stalled.received().endsWith('1234567890'));
});
