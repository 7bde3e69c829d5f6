import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { createEgressProxy } from '../src/agents/egress/proxy.ts';
import { withTenant } from '../src/db/tenant.ts';
import { createLogger } from '../src/logger.ts';
import { createTenant } from '../test/helpers/audit.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare } from './ab.ts';

// `npm run bench`, the egress part (AGT-4): what the egress proxy costs an
// agent, as ratios against the same transfer made directly to the upstream
// in the same run. Through the proxy: a Unix socket connection, CONNECT, the
// policy checks and a TCP connection to a loopback upstream, and a record
// written when the tunnel ends; directly: a TCP connection to that upstream.
// The proxy, the client and the upstream share this one process (and core),
// so the ratios are pessimistic next to a proxy with a process of its own.
//
// 1. Bulk: 64 MiB up (agent → destination) and 64 MiB down, one connection.
// 2. Small request/response: 64-byte ping-pongs over one open connection.
// 3. A new connection per small request: connect (CONNECT through the proxy,
//    with its DNS-free policy check, upstream connect and record), one
//    ping-pong, close.

const BULK_BYTES = 64 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);
const PING = Buffer.alloc(64, 0x62);
const PINGS = 5000;
const CONNECTIONS = 500;

type Dial = () => Promise<net.Socket>;

function dialDirect(port: number): Dial {
  return async () => {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    await once(socket, 'connect');
    return socket;
  };
}

function dialThroughProxy(socketPath: string, port: number): Dial {
  return () =>
    new Promise((resolve, reject) => {
      const socket = net.connect({ path: socketPath });
      let received = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        received = Buffer.concat([received, chunk]);
        const end = received.indexOf('\r\n\r\n');
        if (end === -1) return;
        socket.off('data', onData);
        socket.pause();
        // The destination may already have sent bytes behind the proxy's answer: they belong to the caller.
        if (received.length > end + 4) socket.unshift(received.subarray(end + 4));
        const status = received.subarray(0, end).toString('latin1').split('\r\n')[0] ?? '';
        if (status.startsWith('HTTP/1.1 200')) resolve(socket);
        else reject(new Error(`CONNECT: ${status}`));
      };
      socket.on('data', onData);
      socket.once('error', reject);
      socket.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    });
}

/** Writes BULK_BYTES, half-closes, and waits for the sink's close. */
async function upload(dial: Dial): Promise<void> {
  const socket = await dial();
  for (let sent = 0; sent < BULK_BYTES; sent += CHUNK.length) {
    if (!socket.write(CHUNK)) await once(socket, 'drain');
  }
  socket.end();
  socket.resume();
  await once(socket, 'close');
}

/** Reads until the source has sent BULK_BYTES and closed. */
async function download(dial: Dial): Promise<void> {
  const socket = await dial();
  let received = 0;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
  });
  socket.resume(); // a proxied socket comes paused, with any early bytes unshifted
  await once(socket, 'close');
  if (received !== BULK_BYTES) throw new Error(`download: ${received} bytes`);
}

function pingPong(socket: net.Socket, count: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let left = count;
    let pending = 0;
    socket.on('data', (chunk: Buffer) => {
      pending -= chunk.length;
      if (pending > 0) return;
      left -= 1;
      if (left === 0) {
        socket.removeAllListeners('data');
        resolve();
      } else {
        pending = PING.length;
        socket.write(PING);
      }
    });
    socket.once('error', reject);
    socket.resume();
    pending = PING.length;
    socket.write(PING);
  });
}

async function pings(dial: Dial): Promise<void> {
  const socket = await dial();
  await pingPong(socket, PINGS);
  socket.end();
  await once(socket, 'close');
}

async function connections(dial: Dial): Promise<void> {
  for (let i = 0; i < CONNECTIONS; i += 1) {
    const socket = await dial();
    await pingPong(socket, 1);
    socket.end();
    await once(socket, 'close');
  }
}

function serve(onSocket: (socket: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => {});
    onSocket(socket);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const portOf = (server: net.Server): number => (server.address() as net.AddressInfo).port;

export async function runEgressBench(db: TestDatabase): Promise<void> {
  const tenantId = await createTenant(db, 'egress bench');
  const [agent] = await withTenant(
    db.app,
    tenantId,
    (tx) => tx<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      values (${tenantId}::uuid, 'egress-bench', 'Egress bench', 'echo') returning id`,
  );
  if (agent === undefined) throw new Error('no agent');
  const sink = await serve((socket) => {
    socket.resume();
    socket.on('end', () => socket.end());
  });
  const source = await serve((socket) => {
    void (async () => {
      for (let sent = 0; sent < BULK_BYTES; sent += CHUNK.length) {
        if (!socket.write(CHUNK)) await once(socket, 'drain');
      }
      socket.end();
    })().catch(() => socket.destroy());
  });
  const echo = await serve((socket) => socket.pipe(socket));
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-egress-bench-'));
  const quiet = createLogger('warn', new Writable({ write: (_chunk, _encoding, done) => done() }));
  // Loopback is refused by default; the bench's upstreams are on 127.0.0.1, allowed for this run only.
  const proxy = createEgressProxy({ sql: db.app, logger: quiet, allow: ['127.0.0.1/32'] });
  const socketPath = path.join(dir, 'egress.sock');
  const listener = await proxy.listen(socketPath, { tenantId, agentId: agent.id, allowlist: undefined });
  try {
    const proxiedVsDirect = (task: string, run: (dial: Dial) => Promise<void>, server: net.Server) => {
      const port = portOf(server);
      return compare({
        name: `egress, ${task}`,
        ratio: 'throughput',
        per: { ops: 1 },
        a: { label: 'through the proxy', op: () => run(dialThroughProxy(socketPath, port)) },
        b: { label: 'direct', op: () => run(dialDirect(port)) },
      });
    };
    await proxiedVsDirect('bulk up, 64 MiB', upload, sink);
    await proxiedVsDirect('bulk down, 64 MiB', download, source);
    await proxiedVsDirect(`${PINGS} ping-pongs of 64 B, one connection`, pings, echo);
    await proxiedVsDirect(`${CONNECTIONS} connections, one ping-pong each`, connections, echo);
  } finally {
    await listener.close();
    for (const server of [sink, source, echo]) server.close();
    await rm(dir, { recursive: true, force: true });
  }
  const [count] = await withTenant(
    db.app,
    tenantId,
    (tx) =>
      tx<
        { n: number }[]
      >`select count(*)::int4 as n from egress_connections where agent_id = ${agent.id}::uuid`,
  );
  console.log(`egress records written: ${count?.n ?? 0} (one per proxied connection)`);
}
