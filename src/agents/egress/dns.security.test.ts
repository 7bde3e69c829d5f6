// Attack: an agent names hosts at a DNS server that never answers, to hold the egress proxy's name resolution — and, were it done in libuv's thread pool, every other tenant's egress, sign-ins (scrypt) and file reads — until they stall.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { insertAgent } from '../../../test/helpers/agents.ts';
import { createTenant } from '../../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/database.ts';
import { createPasswordPool } from '../../accounts/password-pool.ts';
import { withTenant } from '../../db/tenant.ts';
import { createLogger } from '../../logger.ts';
import { createEgressProxy, type EgressListener, type EgressProxy, MAX_LOOKUPS_IN_FLIGHT } from './proxy.ts';
import { listEgressRecords } from './records.ts';

// The proxy resolves with the real resolver, pointed at a UDP server on
// 127.0.0.1 that reads every query and answers none. The allowed upstream
// is an echo server on 127.0.0.2, reached by its IP literal (no lookup).

let db: TestDatabase;
let tenantA: string;
let tenantB: string;
const dir = mkdtempSync(path.join(tmpdir(), 'enclave-egress-dns-'));
const logger = createLogger('error');
let blackHole: dgram.Socket;
/** Every name the black hole was asked about, with a waiter per name. */
const asked = new Map<string, PromiseWithResolvers<void>>();
let echo: net.Server;
let echoPort: number;
let proxy: EgressProxy;

const askedFor = (name: string): PromiseWithResolvers<void> => {
  let entry = asked.get(name);
  if (entry === undefined) {
    entry = Promise.withResolvers<void>();
    asked.set(name, entry);
  }
  return entry;
};

/** The question's name: after the 12-byte header, length-prefixed labels up to a zero byte. */
function questionName(packet: Buffer): string {
  const labels: string[] = [];
  let at = 12;
  while (at < packet.length && packet[at] !== 0) {
    const length = packet[at] ?? 0;
    labels.push(packet.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += 1 + length;
  }
  return labels.join('.').toLowerCase();
}

before(async () => {
  db = await createTestDatabase();
  [tenantA, tenantB] = [await createTenant(db, 'dns A'), await createTenant(db, 'dns B')];
  blackHole = dgram.createSocket('udp4');
  blackHole.on('message', (packet) => askedFor(questionName(packet)).resolve());
  await new Promise<void>((resolve) => blackHole.bind(0, '127.0.0.1', resolve));
  echo = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  echoPort = await new Promise<number>((resolve) =>
    echo.listen(0, '127.0.0.2', () => resolve((echo.address() as net.AddressInfo).port)),
  );
  proxy = createEgressProxy({
    sql: db.app,
    logger,
    allow: ['127.0.0.2/32'],
    dnsServers: [`127.0.0.1:${blackHole.address().port}`],
  });
});

after(async () => {
  blackHole.close();
  echo.close();
  await db.drop();
});

function newAgent(tenantId: string): Promise<string> {
  return insertAgent(db.app, tenantId, 'egress');
}

async function listenFor(
  tenantId: string,
): Promise<{ agentId: string; socketPath: string; listener: EgressListener }> {
  const agentId = await newAgent(tenantId);
  const socketPath = path.join(dir, `${agentId}.sock`);
  const listener = await proxy.listen(socketPath, { tenantId, agentId, allowlist: undefined });
  return { agentId, socketPath, listener };
}

interface Answer {
  readonly status: number;
  readonly body: string;
  readonly socket: net.Socket;
}

/** CONNECT through a listener; on 200 the tunnel stays open in `socket`. */
function connect(socketPath: string, authority: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    let received = '';
    socket.on('error', reject);
    const onData = (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (!received.includes('\r\n\r\n')) return;
      if (received.startsWith('HTTP/1.1 200 ')) {
        socket.off('data', onData);
        resolve({ status: 200, body: '', socket });
      }
    };
    socket.on('data', onData);
    socket.on('end', () => {
      const [head = '', body = ''] = received.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), body: body.trim(), socket });
    });
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

function echoed(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    let back = '';
    socket.on('data', (chunk: Buffer) => {
      back += chunk.toString('utf8');
      if (back.length >= text.length) {
        socket.end();
        resolve(back);
      }
    });
    socket.write(text);
  });
}

test(`AGT-6: ${MAX_LOOKUPS_IN_FLIGHT} lookups held at a resolver that never answers starve no one; they end as 502 DNS timeout, recorded`, {
  timeout: 60_000,
}, async () => {
  const b = await listenFor(tenantB);
  const a = await listenFor(tenantA);
  // The sign-ins' password worker is started first (a stored hash that is not ours costs no scrypt): only the hash is timed against the lookups.
  const passwords = createPasswordPool({ workers: 1, queue: 0 });
  await passwords.verify('warm-up', 'not a stored hash');
  const names = Array.from({ length: MAX_LOOKUPS_IN_FLIGHT }, (_, i) => `n${i}.hang.test`);
  let bSettled = 0;
  const held = names.map((name) =>
    connect(b.socketPath, `${name}:443`).finally(() => {
      bSettled += 1;
    }),
  );
  await Promise.all(names.map((name) => askedFor(name).promise));
  const over = await connect(b.socketPath, 'over.hang.test:443');
  assert.equal(over.status, 503, 'the per-instance cap holds');

  // While B's lookups are pending: A's egress, a sign-in's scrypt and a file read all complete.
  const tunnel = await connect(a.socketPath, `127.0.0.2:${echoPort}`);
  assert.equal(tunnel.status, 200);
  assert.equal(await echoed(tunnel.socket, 'tenant A is served'), 'tenant A is served');
  const [hash, file] = await Promise.all([
    passwords.hash('correct horse battery staple').finally(() => passwords.close()),
    readFile(import.meta.filename),
  ]);
  assert.match(hash, /^\$scrypt\$/);
  assert.ok(file.length > 0);
  assert.equal(bSettled, 0, "A was served while all of B's lookups were still pending");

  const answers = await Promise.all(held);
  for (const answer of answers) {
    assert.equal(answer.status, 502);
    assert.match(answer.body, /^DNS timeout \(no answer within 5 s\)$/);
  }
  await b.listener.close();
  await a.listener.close();
  const rows = await withTenant(db.app, tenantB, (tx) => listEgressRecords(tx, b.agentId, 10));
  assert.deepEqual(
    rows.map((row) => [row.host, row.allowed, row.reason]).sort(),
    [
      ...names.map((name) => [name, false, 'DNS timeout (no answer within 5 s)']),
      ['over.hang.test', false, 'too many DNS lookups in flight'],
    ].sort(),
  );
});

test('AGT-4: localhost and *.localhost are loopback without asking DNS, and refused', async () => {
  const { socketPath, listener } = await listenFor(tenantA);
  try {
    for (const name of ['localhost', 'agents.localhost']) {
      const answer = await connect(socketPath, `${name}:${echoPort}`);
      assert.equal(answer.status, 403, name);
      assert.match(answer.body, /^resolves to a loopback address 127\.0\.0\.1$/);
      assert.equal(asked.has(name), false, `${name} was not asked of DNS`);
    }
  } finally {
    await listener.close();
  }
});

/** Answers v4only.test with one A record and NODATA for AAAA, nodata.test with NODATA for both, anything else NXDOMAIN. */
function answer(query: Buffer): Buffer {
  let end = 12;
  while (end < query.length && query[end] !== 0) end += 1 + (query[end] ?? 0);
  const qtype = query.readUInt16BE(end + 1);
  const question = query.subarray(12, end + 5);
  const name = questionName(query);
  const known = name === 'v4only.test' || name === 'nodata.test';
  const records = name === 'v4only.test' && qtype === 1 ? 1 : 0;
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2); // the query's id
  header.writeUInt16BE(known ? 0x8180 : 0x8183, 2); // a response, recursion available; NOERROR or NXDOMAIN
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records, 6);
  // The name as a pointer to the question's, type A, class IN, a TTL of 60 s, four bytes: 127.0.0.2.
  const record = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 2]);
  return Buffer.concat([header, question, ...(records === 1 ? [record] : [])]);
}

test('AGT-4: a name with addresses of one family only resolves (NODATA for the other is an answer); no name or no address is a 502', async () => {
  const server = dgram.createSocket('udp4');
  server.on('message', (query, from) => server.send(answer(query), from.port, from.address));
  await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', resolve));
  const answering = createEgressProxy({
    sql: db.app,
    logger,
    allow: ['127.0.0.2/32'],
    dnsServers: [`127.0.0.1:${server.address().port}`],
  });
  const agentId = await newAgent(tenantA);
  const socketPath = path.join(dir, `${agentId}.sock`);
  const listener = await answering.listen(socketPath, { tenantId: tenantA, agentId, allowlist: undefined });
  try {
    const tunnel = await connect(socketPath, `v4only.test:${echoPort}`);
    assert.equal(tunnel.status, 200);
    assert.equal(await echoed(tunnel.socket, 'by its A record'), 'by its A record');
    const none = await connect(socketPath, `nodata.test:${echoPort}`);
    assert.equal(none.status, 502);
    assert.equal(none.body, 'DNS lookup found no address');
    const missing = await connect(socketPath, `missing.test:${echoPort}`);
    assert.equal(missing.status, 502);
    assert.equal(missing.body, 'DNS lookup failed (ENOTFOUND)');
  } finally {
    await listener.close();
    server.close();
  }
});
