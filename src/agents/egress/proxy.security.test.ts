// Attack: an agent in its sandbox uses the platform's egress proxy to reach what it must not — the host's loopback services, the private network, cloud metadata — by naming them outright, in disguise (integer, hex, IPv4-mapped and NAT64 spellings) or behind a DNS name that resolves (or later rebinds) to them, or tries to crash or exhaust the proxy with malformed requests and hundreds of connections, or to hide its traffic from its owner's records.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { insertAgent } from '../../../test/helpers/agents.ts';
import { createTenant } from '../../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/database.ts';
import { withTenant } from '../../db/tenant.ts';
import { createLogger } from '../../logger.ts';
import { createEgressProxy, MAX_LOOKUPS_IN_FLIGHT, MAX_TUNNELS } from './proxy.ts';
import { type EgressConnectionRow, listEgressRecords } from './records.ts';
import type { LookupFn } from './resolver.ts';

// The allowed upstreams listen on 127.0.0.2, which the proxy may reach only
// through the test's allow range; a tripwire listens on 127.0.0.1 at the same
// port, and must never see a connection.

let db: TestDatabase;
let tenantA: string;
let tenantB: string;
const dir = mkdtempSync(path.join(tmpdir(), 'enclave-egress-'));
const logLines: string[] = [];
const logger = createLogger(
  'debug',
  new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(chunk.toString('utf8'));
      done();
    },
  }),
);

let tripwire: net.Server;
let tripwireHits = 0;
let echo: net.Server;
let echoOpen = 0;
let port: number; // the echo server's on 127.0.0.2, the tripwire's on 127.0.0.1
let web: http.Server;
let webPort: number;
let lastSeen: { url: string; headers: http.IncomingHttpHeaders } | undefined;
let closedPort: number;

const NAMES: Record<string, readonly string[]> = {
  'upstream.test': ['127.0.0.2'],
  'a.wild.test': ['127.0.0.2'],
  'b.a.wild.test': ['127.0.0.2'],
  'wild.test': ['127.0.0.2'],
  'other.test': ['127.0.0.2'],
  'localhost.test': ['127.0.0.1'],
  'private.test': ['10.0.0.5'],
  'metadata.test': ['169.254.169.254'],
  'mixed.test': ['93.184.216.34', '10.1.2.3'],
  'platform.test': ['93.184.216.34'],
};
let rebindCalls = 0;
/** slow.test: announces the lookup, then answers once the test opens the gate. */
let slow = { asked: Promise.withResolvers<void>(), gate: Promise.withResolvers<void>() };
const lookup: LookupFn = async (host) => {
  if (host === 'slow.test') {
    slow.asked.resolve();
    await slow.gate.promise;
    return [{ address: '127.0.0.2', family: 4 }];
  }
  // A name whose first answer is allowed and whose later answers point at the tripwire.
  if (host === 'rebind.test')
    return [{ address: rebindCalls++ === 0 ? '127.0.0.2' : '127.0.0.1', family: 4 }];
  const found = NAMES[host];
  if (found === undefined)
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return found.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
};

function listenOn(server: net.Server, host: string, at = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at, host, () => resolve((server.address() as net.AddressInfo).port));
  });
}

before(async () => {
  db = await createTestDatabase();
  [tenantA, tenantB] = [await createTenant(db, 'egress A'), await createTenant(db, 'egress B')];
  tripwire = net.createServer((socket) => {
    tripwireHits += 1;
    socket.destroy();
  });
  port = await listenOn(tripwire, '127.0.0.1');
  echo = net.createServer((socket) => {
    echoOpen += 1;
    socket.on('close', () => {
      echoOpen -= 1;
    });
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  await listenOn(echo, '127.0.0.2', port);
  web = http.createServer((req, res) => {
    lastSeen = { url: req.url ?? '', headers: req.headers };
    // Hop-by-hop headers of its own, which must not reach the agent; the body echoed in chunks.
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'x-hop-back': 'no',
      connection: 'x-hop-back',
    });
    req.pipe(res);
  });
  webPort = await listenOn(web, '127.0.0.2');
  const probe = net.createServer();
  closedPort = await listenOn(probe, '127.0.0.2');
  await new Promise((resolve) => probe.close(resolve));
});

after(async () => {
  for (const server of [tripwire, echo, web]) server.close();
  web.closeAllConnections();
  await db.drop();
});

function newAgent(tenantId: string): Promise<string> {
  return insertAgent(db.app, tenantId, 'egress');
}

interface Session {
  readonly socketPath: string;
  readonly agentId: string;
}

/** Runs `fn` against a fresh agent's listener, closes it (which awaits the records) and returns them, oldest first. */
async function session(
  options: {
    allowlist?: readonly string[];
    allow?: readonly string[];
    tenantId?: string;
    publicUrl?: string;
  },
  fn: (s: Session) => Promise<void>,
): Promise<EgressConnectionRow[]> {
  const tenantId = options.tenantId ?? tenantA;
  const agentId = await newAgent(tenantId);
  const proxy = createEgressProxy({
    sql: db.app,
    logger,
    allow: options.allow ?? ['127.0.0.2/32'],
    lookup,
    ...(options.publicUrl === undefined ? {} : { publicUrl: options.publicUrl }),
  });
  const socketPath = path.join(dir, `${agentId}.sock`);
  const listener = await proxy.listen(socketPath, { tenantId, agentId, allowlist: options.allowlist });
  try {
    await fn({ socketPath, agentId });
  } finally {
    await listener.close();
  }
  const rows = await withTenant(db.app, tenantId, (tx) => listEgressRecords(tx, agentId, 500));
  return rows.reverse();
}

interface Connected {
  readonly status: number;
  readonly head: string;
  /** Open on 200 (the tunnel); closed otherwise. */
  readonly socket: net.Socket;
  /** The refusal's body, for anything but 200. */
  readonly body: string;
}

/** Speaks CONNECT through the listener's socket, as the sandbox's supervisor relays the agent's request. */
function connect(socketPath: string, authority: string): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    let received = Buffer.alloc(0);
    socket.on('error', reject);
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = received.subarray(0, end).toString('latin1');
      const status = Number(head.split(' ')[1]);
      if (status === 200) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve({ status, head, socket, body: '' });
      }
    };
    socket.on('data', onData);
    socket.on('end', () => {
      const text = received.toString('utf8');
      const [head = '', body = ''] = text.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), head, socket, body });
    });
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
}

/** Sends `bytes` through an open tunnel to the echo server and reads them back. */
function roundTrip(socket: net.Socket, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= bytes.length) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.write(bytes);
  });
}

function closeAndWait(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.closed) return resolve();
    socket.once('close', () => resolve());
    socket.end();
  });
}

/** Writes raw bytes to the listener and returns everything it answers until it closes. */
function raw(socketPath: string, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
    });
    socket.on('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EPIPE' ? undefined : reject(error),
    );
    socket.on('close', () => resolve(text));
    socket.write(bytes);
  });
}

interface Fetched {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

/** A plain-HTTP proxy request (absolute-form target) through the listener's socket. */
function fetchVia(
  socketPath: string,
  url: string,
  options: { method?: string; headers?: http.OutgoingHttpHeaders; body?: Buffer; agent?: http.Agent } = {},
): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        socketPath,
        path: url,
        method: options.method ?? 'GET',
        headers: options.headers,
        agent: options.agent ?? false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            body: Buffer.concat(chunks),
          }),
        );
        response.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(options.body);
  });
}

describe('egress proxy: allowed traffic', () => {
  test('AGT-4: CONNECT to an allowed destination tunnels both ways, and the record counts every byte', async () => {
    const payload = randomBytes(256 * 1024);
    const rows = await session({}, async ({ socketPath }) => {
      const tunnel = await connect(socketPath, `upstream.test:${port}`);
      assert.equal(tunnel.status, 200);
      assert.equal(tunnel.head, 'HTTP/1.1 200 Connection Established');
      assert.ok((await roundTrip(tunnel.socket, payload)).equals(payload));
      await closeAndWait(tunnel.socket);
    });
    assert.equal(rows.length, 1);
    const [row] = rows;
    assert.ok(row !== undefined);
    assert.deepEqual(
      { ...row, id: undefined, duration_ms: undefined, started_at: undefined },
      {
        id: undefined,
        host: 'upstream.test',
        port,
        method: 'CONNECT',
        allowed: true,
        reason: null,
        bytes_out: payload.length,
        bytes_in: payload.length,
        duration_ms: undefined,
        started_at: undefined,
      },
    );
    assert.ok(row.duration_ms >= 0 && row.started_at instanceof Date);
  });

  test('AGT-4: plain HTTP is forwarded in origin form with bodies both ways; proxy and hop-by-hop headers stay behind', async () => {
    const body = randomBytes(100 * 1024);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const rows = await session({}, async ({ socketPath }) => {
      const posted = await fetchVia(socketPath, `http://UPSTREAM.test:${webPort}/echo?q=1`, {
        method: 'POST',
        body,
        agent,
        headers: {
          host: 'internal.corp',
          'proxy-authorization': 'Basic c2VjcmV0',
          'proxy-connection': 'keep-alive',
          connection: 'keep-alive, x-hop',
          'x-hop': 'dropped',
          'x-end-to-end': 'kept',
          'content-length': body.length,
        },
      });
      assert.equal(posted.status, 200);
      assert.ok(posted.body.equals(body), 'the response body streamed back whole');
      assert.equal(
        posted.headers['x-hop-back'],
        undefined,
        "the destination's hop-by-hop header stays behind",
      );
      assert.deepEqual(lastSeen?.url, '/echo?q=1');
      const seen = lastSeen?.headers ?? {};
      assert.equal(seen.host, `upstream.test:${webPort}`, 'Host comes from the URL, not the agent');
      assert.equal(seen['x-end-to-end'], 'kept');
      for (const name of ['proxy-authorization', 'proxy-connection', 'x-hop']) {
        assert.equal(seen[name], undefined, `${name} is not forwarded`);
      }
      // The same agent connection carries a second request (keep-alive), streamed with chunked framing.
      const chunked = await fetchVia(socketPath, `http://upstream.test:${webPort}/second`, {
        method: 'PUT',
        body: Buffer.from('second body'),
        agent,
        headers: { 'transfer-encoding': 'chunked' },
      });
      assert.equal(chunked.body.toString(), 'second body');
      assert.equal(lastSeen?.url, '/second');
      agent.destroy();
    });
    assert.deepEqual(
      rows.map((row) => [row.host, row.port, row.method, row.allowed, row.reason]),
      [
        ['upstream.test', webPort, 'HTTP', true, null],
        ['upstream.test', webPort, 'HTTP', true, null],
      ],
    );
    const posted = rows.find((row) => row.bytes_out > body.length);
    assert.ok(posted !== undefined && posted.bytes_in > body.length, 'both bodies counted');
  });

  test('AGT-4: a name is resolved once and the checked address is the one connected to (no DNS rebinding)', async () => {
    const before = tripwireHits;
    const rows = await session({}, async ({ socketPath }) => {
      const tunnel = await connect(socketPath, `rebind.test:${port}`);
      assert.equal(tunnel.status, 200);
      assert.equal((await roundTrip(tunnel.socket, Buffer.from('ping'))).toString(), 'ping');
      await closeAndWait(tunnel.socket);
    });
    assert.equal(rebindCalls, 1);
    assert.equal(tripwireHits, before);
    assert.equal(rows[0]?.allowed, true);
  });
});

describe('egress proxy: refused destinations', () => {
  const cases: [string, string][] = [
    [`127.0.0.1:${0}`, 'loopback'],
    [`localhost.test:${0}`, 'loopback'],
    [`[::1]:${0}`, 'loopback'],
    [`2130706433:${0}`, 'loopback'],
    [`0x7f.1:${0}`, 'loopback'],
    [`0177.0.0.1:${0}`, 'loopback'],
    [`[::ffff:127.0.0.1]:${0}`, 'loopback'],
    [`[64:ff9b::7f00:1]:${0}`, 'loopback'],
    [`0.0.0.0:${0}`, 'unspecified'],
    ['10.0.0.1:80', 'private'],
    ['192.168.0.1:80', 'private'],
    ['[fd12::1]:80', 'private'],
    ['private.test:443', 'private'],
    ['mixed.test:443', 'private'],
    ['169.254.1.1:80', 'link-local'],
    ['[fe80::1]:80', 'link-local'],
    ['169.254.169.254:80', 'metadata'],
    ['[::ffff:169.254.169.254]:80', 'metadata'],
    ['metadata.test:80', 'metadata'],
    ['[fd00:ec2::254]:80', 'metadata'],
    ['100.100.100.200:80', 'metadata'],
    ['100.64.0.1:80', 'shared'],
    ['224.0.0.1:80', 'multicast'],
    ['198.18.0.1:80', 'benchmarking'],
  ];

  test('AGT-4: every loopback, private, link-local, metadata and reserved destination is refused with 403 and recorded', async () => {
    const before = tripwireHits;
    const targets = cases.map(([authority, kind]) => [authority.replace(/:0$/, `:${port}`), kind] as const);
    const rows = await session({}, async ({ socketPath }) => {
      for (const [authority, kind] of targets) {
        const answer = await connect(socketPath, authority);
        assert.equal(answer.status, 403, `${authority}: ${answer.head}`);
        assert.match(answer.body, new RegExp(`${kind} address`), authority);
      }
    });
    assert.equal(tripwireHits, before, 'nothing reached the loopback tripwire');
    // Records made within one millisecond have no order between them: compared as sets.
    const kindOf = (reason: string | null) => /(\S+) address /.exec(reason ?? '')?.[1];
    assert.deepEqual(rows.map((row) => kindOf(row.reason)).sort(), targets.map(([, kind]) => kind).sort());
    for (const row of rows) {
      assert.deepEqual([row.method, row.allowed, row.bytes_out, row.bytes_in], ['CONNECT', false, 0, 0]);
    }
    assert.equal(
      rows.filter((row) => row.host === '127.0.0.1').length,
      4,
      'the integer, hex and octal spellings are recorded as the address they are',
    );
    assert.ok(
      rows.some(
        (row) =>
          row.host === 'mixed.test' && /resolves to a private address 10\.1\.2\.3/.test(row.reason ?? ''),
      ),
      'one private answer of two is enough to refuse',
    );
  });

  test('AGT-4: plain-HTTP requests to refused destinations get 403 in any spelling', async () => {
    const before = tripwireHits;
    const rows = await session({}, async ({ socketPath }) => {
      for (const url of [
        `http://127.0.0.1:${port}/`,
        `http://2130706433:${port}/`,
        `http://0x7f000001:${port}/`,
        `http://[::ffff:7f00:1]:${port}/`,
        'http://private.test/',
        'http://169.254.169.254/latest/meta-data/',
      ]) {
        const response = await fetchVia(socketPath, url);
        assert.equal(response.status, 403, url);
        assert.match(String(response.headers['content-type']), /^text\/plain/);
      }
    });
    assert.equal(tripwireHits, before);
    assert.deepEqual(
      rows.map((row) => [row.method, row.allowed]),
      Array.from({ length: 6 }, () => ['HTTP', false]),
    );
  });

  test('AGT-4: an operator allow range admits its addresses and nothing beside them', async () => {
    const none = await session({ allow: [] }, async ({ socketPath }) => {
      assert.equal((await connect(socketPath, `upstream.test:${port}`)).status, 403);
    });
    assert.match(none[0]?.reason ?? '', /loopback address 127\.0\.0\.2/);
    await session({ allow: ['127.0.0.2/32'] }, async ({ socketPath }) => {
      const tunnel = await connect(socketPath, `127.0.0.2:${port}`);
      assert.equal(tunnel.status, 200);
      await closeAndWait(tunnel.socket);
      assert.equal((await connect(socketPath, `127.0.0.3:${port}`)).status, 403);
    });
  });
});

describe("egress proxy: the platform's own address", () => {
  test("AGT-4: the platform's public address is refused as the host's own, named in its URL or resolved from it", async () => {
    for (const publicUrl of ['https://platform.test/', 'https://93.184.216.34:8443/']) {
      const rows = await session({ allow: [], publicUrl }, async ({ socketPath }) => {
        const answer = await connect(socketPath, '93.184.216.34:443');
        assert.equal(answer.status, 403, publicUrl);
        assert.equal(answer.body, 'host address 93.184.216.34\n');
        assert.equal((await fetchVia(socketPath, 'http://platform.test/')).status, 403);
      });
      assert.deepEqual(
        rows.map((row) => row.reason),
        ['host address 93.184.216.34', 'resolves to a host address 93.184.216.34'],
      );
    }
  });
});

describe('egress proxy: allowlist', () => {
  test('AGT-4: with an allowlist only exact names and subdomains of *.suffix pass; IP literals only when listed', async () => {
    const outcomes: Record<string, number> = {};
    await session({ allowlist: ['upstream.test', '*.wild.test', 'private.test'] }, async ({ socketPath }) => {
      for (const host of [
        'UPSTREAM.TEST.',
        'a.wild.test',
        'b.a.wild.test',
        'wild.test',
        'other.test',
        '127.0.0.2',
      ]) {
        const answer = await connect(socketPath, `${host}:${port}`);
        outcomes[host] = answer.status;
        if (answer.status === 200) await closeAndWait(answer.socket);
        else assert.match(answer.body, /allowlist/);
      }
      const listedButPrivate = await connect(socketPath, 'private.test:443');
      assert.equal(listedButPrivate.status, 403, 'the allowlist does not lift the address checks');
      assert.match(listedButPrivate.body, /private address/);
      assert.equal((await fetchVia(socketPath, `http://other.test:${webPort}/`)).status, 403);
    });
    assert.deepEqual(outcomes, {
      'UPSTREAM.TEST.': 200,
      'a.wild.test': 200,
      'b.a.wild.test': 200,
      'wild.test': 403,
      'other.test': 403,
      '127.0.0.2': 403,
    });
    await session({ allowlist: ['127.0.0.2'] }, async ({ socketPath }) => {
      const tunnel = await connect(socketPath, `127.0.0.2:${port}`);
      assert.equal(tunnel.status, 200, 'an IP listed exactly');
      await closeAndWait(tunnel.socket);
    });
  });
});

describe('egress proxy: failures and malformed requests', () => {
  test('AGT-4: a DNS failure and a refused connection answer 502 and are recorded', async () => {
    const rows = await session({}, async ({ socketPath }) => {
      const missing = await connect(socketPath, 'nowhere.test:443');
      assert.equal(missing.status, 502);
      assert.match(missing.body, /DNS lookup failed \(ENOTFOUND\)/);
      assert.equal((await fetchVia(socketPath, 'http://nowhere.test/')).status, 502);
      const closed = await connect(socketPath, `upstream.test:${closedPort}`);
      assert.equal(closed.status, 502);
      assert.match(closed.body, /connect failed \(ECONNREFUSED\)/);
    });
    assert.deepEqual(rows.map((row) => [row.host, row.method, row.allowed, row.reason]).sort(), [
      ['nowhere.test', 'CONNECT', false, 'DNS lookup failed (ENOTFOUND)'],
      ['nowhere.test', 'HTTP', false, 'DNS lookup failed (ENOTFOUND)'],
      ['upstream.test', 'CONNECT', false, 'connect failed (ECONNREFUSED)'],
    ]);
  });

  test('AGT-4: garbage, origin-form and oversized request heads get 400 without a crash; only a known host is recorded', async () => {
    const rows = await session({}, async ({ socketPath }) => {
      assert.match(
        await raw(socketPath, 'hello there\r\n\r\n'),
        /^HTTP\/1\.1 400 .*\r\n[\s\S]*malformed request/,
      );
      assert.match(await raw(socketPath, randomBytes(4096)), /^HTTP\/1\.1 400 /);
      const origin = await raw(socketPath, 'GET /index.html HTTP/1.1\r\nHost: upstream.test\r\n\r\n');
      assert.match(origin, /^HTTP\/1\.1 400 [\s\S]*absolute http:\/\/ URL/);
      const huge = `GET http://upstream.test/ HTTP/1.1\r\nHost: upstream.test\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`;
      assert.match(await raw(socketPath, huge), /^HTTP\/1\.1 400 [\s\S]*larger than 16 KiB/);
      assert.match(
        await raw(socketPath, 'CONNECT no-port-here HTTP/1.1\r\n\r\n'),
        /^HTTP\/1\.1 400 [\s\S]*host:port/,
      );
      assert.match(await raw(socketPath, 'CONNECT user@host:443 HTTP/1.1\r\n\r\n'), /^HTTP\/1\.1 400 /);
      const https = await fetchVia(socketPath, `https://upstream.test:${port}/`);
      assert.equal(https.status, 400);
      assert.match(https.body.toString(), /CONNECT/);
      // Still serving.
      const tunnel = await connect(socketPath, `upstream.test:${port}`);
      assert.equal(tunnel.status, 200);
      await closeAndWait(tunnel.socket);
    });
    assert.deepEqual(rows.map((row) => [row.host, row.port, row.method, row.allowed]).sort(), [
      ['upstream.test', port, 'CONNECT', true],
      ['upstream.test', port, 'HTTP', false],
    ]);
  });

  test('AGT-4: a request head still incomplete after 10 s gets 400 and the connection is closed (slow loris)', async () => {
    const rows = await session({}, async ({ socketPath }) => {
      const answer = await raw(
        socketPath,
        `GET http://upstream.test:${webPort}/ HTTP/1.1\r\nHost: upstream.test\r\n`,
      );
      assert.match(answer, /^HTTP\/1\.1 400 [\s\S]*not complete within 10 s/);
    });
    assert.equal(rows.length, 0, 'no host was ever known');
  });

  test('AGT-4: agent resets mid-tunnel end the tunnel quietly and are still recorded', async () => {
    const rows = await session({}, async ({ socketPath }) => {
      const tunnel = await connect(socketPath, `upstream.test:${port}`);
      await roundTrip(tunnel.socket, Buffer.from('before the reset'));
      tunnel.socket.destroy(); // a Unix socket has no RST: the abrupt close is what a crashed client looks like
      const next = await connect(socketPath, `upstream.test:${port}`);
      assert.equal(next.status, 200, 'the proxy is unharmed');
      await closeAndWait(next.socket);
    });
    assert.equal(rows.length, 2);
    assert.ok(rows.every((row) => row.allowed));
    assert.ok(rows.some((row) => row.bytes_out === 'before the reset'.length));
  });
});

describe('egress proxy: limits and lifecycle', () => {
  test('AGT-4: an agent that hangs up while its target resolves leaves nothing open behind', {
    timeout: 30_000,
  }, async () => {
    const rows = await session({}, async ({ socketPath }) => {
      for (const request of [
        `CONNECT slow.test:${port} HTTP/1.1\r\n\r\n`,
        `GET http://slow.test:${webPort}/ HTTP/1.1\r\nHost: slow.test\r\n\r\n`,
      ]) {
        slow = { asked: Promise.withResolvers<void>(), gate: Promise.withResolvers<void>() };
        const socket = net.connect({ path: socketPath });
        socket.write(request);
        await slow.asked.promise;
        socket.destroy();
        await once(socket, 'close');
        slow.gate.resolve();
      }
    });
    // session() returned, so listener.close() found no tunnel or request still waiting.
    assert.deepEqual(rows.map((row) => row.method).sort(), ['CONNECT', 'HTTP']);
  });

  test(`AGT-4: past ${MAX_LOOKUPS_IN_FLIGHT} DNS lookups in flight the next request gets 503 at once, and it is recorded`, async () => {
    const gate = Promise.withResolvers<void>();
    let asked = 0;
    const allAsked = Promise.withResolvers<void>();
    const hanging: LookupFn = async (host) => {
      if (host !== 'hang.test') return lookup(host);
      asked += 1;
      if (asked === MAX_LOOKUPS_IN_FLIGHT) allAsked.resolve();
      await gate.promise;
      return [{ address: '127.0.0.2', family: 4 }];
    };
    const agentId = await newAgent(tenantA);
    const proxy = createEgressProxy({ sql: db.app, logger, allow: ['127.0.0.2/32'], lookup: hanging });
    const socketPath = path.join(dir, `${agentId}.sock`);
    const listener = await proxy.listen(socketPath, { tenantId: tenantA, agentId, allowlist: undefined });
    const waiting = Array.from({ length: MAX_LOOKUPS_IN_FLIGHT }, () =>
      connect(socketPath, `hang.test:${port}`),
    );
    await allAsked.promise;
    const over = await connect(socketPath, `hang.test:${port}`);
    assert.equal(over.status, 503);
    assert.match(over.body, /too many DNS lookups in flight/);
    gate.resolve();
    const tunnels = await Promise.all(waiting);
    assert.ok(
      tunnels.every((tunnel) => tunnel.status === 200),
      'the waiting ones go through once DNS answers',
    );
    await Promise.all(tunnels.map((tunnel) => closeAndWait(tunnel.socket)));
    await listener.close();
    const rows = await withTenant(db.app, tenantA, (tx) => listEgressRecords(tx, agentId, 10));
    assert.equal(rows.filter((row) => /too many DNS lookups/.test(row.reason ?? '')).length, 1);
  });

  test(`AGT-4: past ${MAX_TUNNELS} open tunnels the next CONNECT gets 503, and it is recorded`, async () => {
    const rows = await session({}, async ({ socketPath }) => {
      const tunnels = await Promise.all(
        Array.from({ length: MAX_TUNNELS }, () => connect(socketPath, `upstream.test:${port}`)),
      );
      assert.ok(tunnels.every((tunnel) => tunnel.status === 200));
      const over = await connect(socketPath, `upstream.test:${port}`);
      assert.equal(over.status, 503);
      assert.match(over.body, /too many open connections/);
      await Promise.all(tunnels.map((tunnel) => closeAndWait(tunnel.socket)));
    });
    assert.equal(rows.length, MAX_TUNNELS + 1);
    assert.equal(rows.filter((row) => !row.allowed && /too many/.test(row.reason ?? '')).length, 1);
  });

  test('AGT-4: closing the listener ends open tunnels, removes the socket and keeps their records', async () => {
    const agentId = await newAgent(tenantA);
    const proxy = createEgressProxy({ sql: db.app, logger, allow: ['127.0.0.2/32'], lookup });
    const socketPath = path.join(dir, `${agentId}.sock`);
    const listener = await proxy.listen(socketPath, { tenantId: tenantA, agentId, allowlist: undefined });
    assert.equal(statSync(socketPath).mode & 0o777, 0o666, "the sandbox's uid must be able to connect");
    const tunnel = await connect(socketPath, `upstream.test:${port}`);
    await roundTrip(tunnel.socket, Buffer.from('still open'));
    const ended = new Promise((resolve) => tunnel.socket.once('close', resolve));
    await listener.close();
    await ended;
    await assert.rejects(raw(socketPath, 'CONNECT upstream.test:1 HTTP/1.1\r\n\r\n'), /ENOENT|ECONNREFUSED/);
    const rows = await withTenant(db.app, tenantA, (tx) => listEgressRecords(tx, agentId, 10));
    assert.equal(rows.length, 1, 'close() awaited the record');
    assert.equal(rows[0]?.bytes_out, 'still open'.length);
    for (let i = 0; i < 200 && echoOpen > 0; i += 1) await delay(10); // the destination sees the close a moment later
    assert.equal(echoOpen, 0, 'the upstream side was closed too');
  });

  test("AGT-4: records are tenant-scoped: another tenant's transaction sees none of them", async () => {
    const rows = await session({ tenantId: tenantB }, async ({ socketPath }) => {
      assert.equal((await connect(socketPath, '10.0.0.1:80')).status, 403);
    });
    assert.equal(rows.length, 1);
    const [row] = rows;
    const seenByA = await withTenant(
      db.app,
      tenantA,
      (tx) => tx`select 1 from egress_connections where id = ${row?.id ?? ''}::uuid`,
    );
    assert.equal(seenByA.length, 0);
    const [owner] = await db.superuser<{ tenant_id: string }[]>`
      select tenant_id from egress_connections where id = ${row?.id ?? ''}::uuid`;
    assert.equal(owner?.tenant_id, tenantB);
  });

  test('AGT-4: no log line carries a URL path, query or header value', async () => {
    const canary = `canary${randomBytes(8).toString('hex')}`;
    await session({}, async ({ socketPath }) => {
      await fetchVia(socketPath, `http://upstream.test:${webPort}/${canary}/path?token=${canary}`, {
        headers: { authorization: `Bearer ${canary}`, 'x-key': canary },
      });
      await fetchVia(socketPath, `http://private.test/${canary}?q=${canary}`);
      await raw(socketPath, `GET /${canary} HTTP/1.1\r\nHost: ${canary}\r\n\r\n`);
    });
    assert.ok(logLines.length > 0, 'debug lines were written');
    assert.ok(!logLines.join('\n').includes(canary));
  });
});
