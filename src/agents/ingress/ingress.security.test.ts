import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { test } from 'node:test';
import { buildTestApp, useTestApp } from '../../../test/helpers/app.ts';
import { createTenant } from '../../../test/helpers/audit.ts';
import { SESSION_COOKIE } from '../../accounts/sessions.ts';
import { withTenant } from '../../db/tenant.ts';
import { listenHostSocket, removeHostSocket } from '../runtime/host-sockets.ts';
import { PLATFORM_COOKIE_PREFIX } from './proxy.ts';
import { newSubdomain } from './subdomain.ts';

// The attack: someone who does not own an instance crafts the Host header (a
// guessed, stopped, malformed or foreign name) to reach it, to learn which
// instances exist, to read the platform's session cookie or plant cookies on
// the platform through an instance, or to crash the server with bad input.

const dataDir = mkdtempSync(path.join(tmpdir(), 'enclave-ingress-'));
const ctx = useTestApp({ ENCLAVE_DATA_DIR: dataDir });
const DOMAIN = 'agents.localhost';
const MIB = 1024 * 1024;
let port = 0;
let tenantA = '';
let tenantB = '';
let serial = 0;
const instanceServers = new Set<http.Server>();

ctx.before(async () => {
  await ctx.testApp.app.listen({ port: 0, host: '127.0.0.1' });
  port = (ctx.testApp.app.server.address() as AddressInfo).port;
  tenantA = await createTenant(ctx.db, 'ingress tenant A');
  tenantB = await createTenant(ctx.db, 'ingress tenant B');
});
ctx.after(async () => {
  for (const socket of upgradedSockets) socket.destroy();
  for (const server of instanceServers) {
    server.closeAllConnections();
    server.close();
  }
  rmSync(dataDir, { recursive: true, force: true });
});

type State = 'stopped' | 'starting' | 'running' | 'crashed' | 'stopping';

interface Instance {
  readonly agentId: string;
  readonly subdomain: string;
  /** The Host a browser sends for it. */
  readonly host: string;
  readonly socketPath: string;
}

/** An agent and its instance row, inserted under the tenant's RLS as the app would. */
async function addInstance(tenantId: string, state: State): Promise<Instance> {
  serial += 1;
  const subdomain = newSubdomain('ec');
  const agentId = await withTenant(ctx.db.app, tenantId, async (tx) => {
    const [agent] = await tx<{ id: string }[]>`
      insert into agents (tenant_id, handle, name, template_id)
      values (${tenantId}::uuid, ${`ingress-${serial}-${randomBytes(3).toString('hex')}`}, 'Ingress test', 'echo')
      returning id::text`;
    assert.ok(agent);
    await tx`
      insert into agent_instances (agent_id, tenant_id, subdomain, state, desired_state)
      values (${agent.id}::uuid, ${tenantId}::uuid, ${subdomain}, ${state},
              ${state === 'stopped' || state === 'stopping' ? 'stopped' : 'running'})`;
    return agent.id;
  });
  const socketPath = path.join(ctx.testApp.config.instancesDir, agentId, 'host', 'ingress.sock');
  return { agentId, subdomain, host: `${subdomain}.${DOMAIN}:${port}`, socketPath };
}

/** Test-controlled moments inside the fake instance, to prove bodies stream rather than buffer. */
let uploadStarted = Promise.withResolvers<void>();
let downloadMayFinish = Promise.withResolvers<void>();
let hungRequestClosed = Promise.withResolvers<void>();
/** The instance ends of open tunnels (an upgraded socket is no longer one of its server's HTTP connections). */
const upgradedSockets = new Set<Duplex>();

/**
 * A fake instance on the ingress socket: echoes what it received as JSON,
 * and has routes for uploads, downloads, cookies, hangs and resets, and an
 * upgrade that answers 101 and echoes bytes.
 */
async function serveInstance(instance: Instance, name: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/upload') {
      const digest = createHash('sha256');
      let bytes = 0;
      req.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        digest.update(chunk);
        uploadStarted.resolve();
      });
      req.on('end', () => res.end(JSON.stringify({ bytes, sha256: digest.digest('hex') })));
      return;
    }
    if (url === '/download') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write(downloadChunk(0));
      void downloadMayFinish.promise.then(() => {
        for (let i = 1; i < 80; i++) res.write(downloadChunk(i));
        res.end();
      });
      return;
    }
    if (url === '/cookies') {
      res.setHeader('set-cookie', [
        'plain=1; Path=/',
        `own=2; Domain=${instance.subdomain}.${DOMAIN}; Path=/`,
        `own_dot=3; domain=.${instance.subdomain.toUpperCase()}.${DOMAIN}`,
        `siblings=4; Domain=${DOMAIN}`,
        `${SESSION_COOKIE}=planted; Domain=localhost; Path=/`,
        'parent=5; Path=/; Domain=.localhost',
        `twice=6; Domain=${instance.subdomain}.${DOMAIN}; Domain=${DOMAIN}`,
      ]);
      res.end('cookies');
      return;
    }
    if (url === '/hang') {
      res.on('close', () => hungRequestClosed.resolve());
      return;
    }
    if (url === '/reset') {
      req.socket.destroy();
      return;
    }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ instance: name, method: req.method, url, headers: req.headers }));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n' +
        `X-Instance: ${name}\r\nX-Seen-Cookie: ${req.headers.cookie ?? '(none)'}\r\n` +
        `Set-Cookie: tossed=1; Domain=${DOMAIN}\r\nSet-Cookie: kept=1\r\n\r\n`,
    );
    if (head.length > 0) socket.write(head);
    upgradedSockets.add(socket);
    socket.on('close', () => upgradedSockets.delete(socket));
    socket.pipe(socket);
  });
  mkdirSync(path.dirname(instance.socketPath), { recursive: true, mode: 0o711 });
  // As the driver binds it: through the host directory's checked descriptor, its inode remembered.
  await listenHostSocket(path.dirname(instance.socketPath), 'ingress.sock', 0o600, server);
  instanceServers.add(server);
  socketOfServer.set(server, instance.socketPath);
  return server;
}

const socketOfServer = new Map<http.Server, string>();

async function stopServing(server: http.Server): Promise<void> {
  instanceServers.delete(server);
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await removeHostSocket(socketOfServer.get(server) ?? '');
}

function downloadChunk(index: number): Buffer {
  return Buffer.alloc(64 * 1024, index % 251);
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** Header pairs as sent, without Date (the one header that may differ between two identical answers). */
  readonly rawHeaders: string[][];
  readonly body: Buffer;
}

function collect(res: IncomingMessage): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (chunk: Buffer) => chunks.push(chunk));
    res.on('error', reject);
    res.on('end', () => {
      const pairs: string[][] = [];
      for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) {
        const name = res.rawHeaders[i] ?? '';
        if (name.toLowerCase() !== 'date') pairs.push([name, res.rawHeaders[i + 1] ?? '']);
      }
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        rawHeaders: pairs,
        body: Buffer.concat(chunks),
      });
    });
  });
}

function send(
  host: string,
  options: {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
    body?: Buffer;
    /** Kept-alive connections to reuse (default: a connection of its own). */
    agent?: http.Agent;
  } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: { ...options.headers, host },
        agent: options.agent ?? false,
      },
      (res) => collect(res).then(resolve, reject),
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Bytes straight onto a TCP connection, for Hosts an HTTP client refuses to send; resolves with the answer's text. */
function sendRaw(request: Buffer | string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.write(request);
  });
}

const statusOf = (raw: string): string => raw.slice(0, raw.indexOf('\r\n'));

function json(answer: Answer): {
  instance: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
} {
  return JSON.parse(answer.body.toString('utf8')) as {
    instance: string;
    method: string;
    url: string;
    headers: IncomingHttpHeaders;
  };
}

/** Opens an upgrade to `host`; resolves with the tunnel on 101, or the answer when refused. */
function upgrade(
  host: string,
  headers: Record<string, string> = {},
): Promise<{ tunnel: Duplex; response: IncomingMessage } | Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      path: '/socket',
      headers: { ...headers, host, connection: 'Upgrade', upgrade: 'echo' },
      agent: false,
    });
    req.on('upgrade', (response: IncomingMessage, tunnel: Duplex) => resolve({ tunnel, response }));
    req.on('response', (res) => collect(res).then(resolve, reject));
    req.on('error', reject);
    req.end();
  });
}

function echoThrough(tunnel: Duplex, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = '';
    const onData = (chunk: Buffer): void => {
      received += chunk.toString('utf8');
      if (received.length < text.length) return;
      tunnel.off('data', onData);
      tunnel.off('error', reject);
      resolve(received);
    };
    tunnel.on('data', onData);
    tunnel.on('error', reject);
    tunnel.write(text);
  });
}

test('AGT-3: each Host reaches its own instance, across two tenants, and the platform keeps its own Host', async () => {
  const first = await addInstance(tenantA, 'running');
  const second = await addInstance(tenantB, 'running');
  await serveInstance(first, 'first');
  await serveInstance(second, 'second');

  const a = await send(first.host, { path: '/hello?x=1' });
  assert.equal(a.status, 200);
  assert.deepEqual([json(a).instance, json(a).url], ['first', '/hello?x=1']);
  assert.equal(json(await send(second.host)).instance, 'second');
  // Case and the port do not matter; the name does.
  assert.equal(json(await send(first.host.toUpperCase())).instance, 'first');
  assert.equal(json(await send(`${second.subdomain}.${DOMAIN}`)).instance, 'second');

  // The platform's own routes, on its own Host, answer as before, also when asked to upgrade.
  const platform = await send(`127.0.0.1:${port}`, { path: '/healthz' });
  assert.deepEqual([platform.status, JSON.parse(platform.body.toString('utf8'))], [200, { status: 'ok' }]);
  assert.equal((await send(`localhost:${port}`, { path: '/healthz' })).status, 200);
  const platformUpgrade = await upgrade(`localhost:${port}`);
  assert.ok(!('tunnel' in platformUpgrade));
  assert.equal(platformUpgrade.status, 404);
  assert.match(String(platformUpgrade.headers['content-type']), /application\/problem\+json/);
  // …and the platform's paths under an instance's Host are the instance's.
  assert.equal(json(await send(first.host, { path: '/healthz' })).instance, 'first');
});

test('AGT-3: unknown, stopped, starting, stopping, crashed and unreachable instances all get one identical 404', async () => {
  const cases: [string, string][] = [
    ['unknown', `${newSubdomain('ec')}.${DOMAIN}:${port}`],
    ['unknown, another prefix', `${newSubdomain('zz')}.${DOMAIN}:${port}`],
  ];
  for (const state of ['stopped', 'starting', 'stopping', 'crashed'] as const) {
    // Each with a live socket: only the row's state keeps the request out.
    const instance = await addInstance(tenantA, state);
    await serveInstance(instance, state);
    cases.push([state, instance.host]);
  }
  const gone = await addInstance(tenantA, 'running');
  cases.push(['running, no socket (restarting)', gone.host]);
  const refusing = await addInstance(tenantB, 'running');
  mkdirSync(path.dirname(refusing.socketPath), { recursive: true, mode: 0o711 });
  writeFileSync(refusing.socketPath, 'not a socket'); // connecting to it is refused
  cases.push(['running, socket refuses', refusing.host]);

  const answers = await Promise.all(cases.map(([, host]) => send(host, { path: '/anything' })));
  const [reference] = answers;
  assert.ok(reference);
  assert.equal(reference.status, 404);
  assert.equal(reference.headers['cache-control'], 'no-store');
  assert.match(String(reference.headers['content-type']), /^text\/plain/);
  answers.forEach((answer, i) => {
    assert.equal(answer.status, 404, cases[i]?.[0]);
    assert.deepEqual(answer.rawHeaders, reference.rawHeaders, cases[i]?.[0]);
    assert.deepEqual(answer.body, reference.body, cases[i]?.[0]);
  });

  // The same 404 body for an upgrade, whichever way the name fails.
  for (const [label, host] of cases) {
    const refused = await upgrade(host);
    assert.ok(!('tunnel' in refused), label);
    assert.equal(refused.status, 404, label);
    assert.deepEqual(refused.body, reference.body, label);
  }
});

test('AGT-3: a request while the instance restarts gets the 404, and the next one after it is back gets through', async () => {
  const instance = await addInstance(tenantA, 'running');
  let server = await serveInstance(instance, 'before');
  const unknown = await send(`${newSubdomain('ec')}.${DOMAIN}:${port}`);
  assert.equal(json(await send(instance.host)).instance, 'before');
  await stopServing(server);
  const during = await send(instance.host);
  assert.deepEqual([during.status, during.rawHeaders, during.body], [404, unknown.rawHeaders, unknown.body]);
  server = await serveInstance(instance, 'after');
  assert.equal(json(await send(instance.host)).instance, 'after');
});

test('AGT-3: a deleted or stopped agent stops answering though its instance still listens, and stays refused', async () => {
  // The lookup is cached for a moment (proxy.ts, RUNNING_CACHE_MS): a cached name must not outlive its row.
  const deleted = await addInstance(tenantA, 'running');
  await serveInstance(deleted, 'deleted');
  const stopped = await addInstance(tenantB, 'running');
  await serveInstance(stopped, 'stopped');
  assert.equal(json(await send(deleted.host)).instance, 'deleted');
  assert.equal(json(await send(stopped.host)).instance, 'stopped');
  // The rows change; the instances (the worker has not reached them yet) keep listening.
  await withTenant(ctx.db.app, tenantA, (tx) => tx`delete from agents where id = ${deleted.agentId}::uuid`);
  await withTenant(
    ctx.db.app,
    tenantB,
    (tx) => tx`update agent_instances set state = 'stopping' where agent_id = ${stopped.agentId}::uuid`,
  );
  for (const instance of [deleted, stopped]) {
    // Safety net only: the cache holds a name for a fraction of a second.
    const deadline = Date.now() + 10_000;
    let status = 200;
    while (status === 200 && Date.now() < deadline) {
      status = (await send(instance.host)).status;
      if (status === 200) await new Promise((next) => setTimeout(next, 20));
    }
    assert.equal(status, 404);
    for (let i = 0; i < 5; i++) assert.equal((await send(instance.host)).status, 404);
  }
});

test('AGT-3: under steady traffic on kept-alive connections, a stopped or deleted agent stops answering within 100 ms of its row changing', async () => {
  // Busy names are looked up again in the background (running.ts): that must never stretch the 100 ms.
  for (const change of ['stopped', 'deleted'] as const) {
    const instance = await addInstance(change === 'stopped' ? tenantA : tenantB, 'running');
    await serveInstance(instance, change);
    const agent = new http.Agent({ keepAlive: true });
    const answers: { sent: number; status: number }[] = [];
    let traffic = true;
    const loops = Array.from({ length: 4 }, async () => {
      while (traffic) {
        const sent = performance.now();
        answers.push({ sent, status: (await send(instance.host, { agent })).status });
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 300));
    if (change === 'stopped') {
      await withTenant(
        ctx.db.app,
        tenantA,
        (tx) => tx`update agent_instances set state = 'stopped' where agent_id = ${instance.agentId}::uuid`,
      );
    } else {
      await withTenant(
        ctx.db.app,
        tenantB,
        (tx) => tx`delete from agents where id = ${instance.agentId}::uuid`,
      );
    }
    // Committed by now: a lookup sent from here on reads the new row.
    const changed = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 400));
    traffic = false;
    await Promise.all(loops);
    agent.destroy();
    assert.ok(
      answers.some((answer) => answer.sent < changed && answer.status === 200),
      change,
    );
    const late = answers.filter((answer) => answer.sent >= changed + 100);
    assert.ok(late.length > 0, change);
    assert.deepEqual(
      late.filter((answer) => answer.status !== 404).map((answer) => answer.sent - changed),
      [],
      `${change}: answered this many ms after its row changed`,
    );
  }
});

test('AGT-2, AGT-3: a socket put in place of the one the host bound, or a link to another, is never connected to', async () => {
  const victim = await addInstance(tenantB, 'running');
  const victimServer = await serveInstance(victim, 'victim');
  const attacker = await addInstance(tenantA, 'running');
  await serveInstance(attacker, 'attacker');
  const unknown = await send(`${newSubdomain('ec')}.${DOMAIN}:${port}`);
  let planted = 0;
  const plant = http.createServer((_req, res) => {
    planted += 1;
    res.end('planted');
  });
  // Another socket renamed over the one the host bound: same path, another inode.
  const other = `${attacker.socketPath}.other`;
  await new Promise<void>((resolve) => plant.listen(other, resolve));
  renameSync(other, attacker.socketPath);
  const replaced = await send(attacker.host);
  assert.deepEqual([replaced.status, replaced.body], [404, unknown.body]);
  // A link to another tenant's instance socket in its place.
  unlinkSync(attacker.socketPath);
  symlinkSync(victim.socketPath, attacker.socketPath);
  const linked = await send(attacker.host);
  assert.deepEqual([linked.status, linked.body], [404, unknown.body]);
  // The host directory itself swapped for a link to the victim's.
  const attackerDir = path.dirname(attacker.socketPath);
  rmSync(attackerDir, { recursive: true, force: true });
  symlinkSync(path.dirname(victim.socketPath), attackerDir);
  const dirLinked = await send(attacker.host);
  assert.deepEqual([dirLinked.status, dirLinked.body], [404, unknown.body]);
  assert.equal(planted, 0);
  assert.equal(json(await send(victim.host)).instance, 'victim', 'the victim itself is still served');
  plant.close();
  await stopServing(victimServer);
});

test('AGT-3: malformed Hosts under the agents domain get 400, never a 500, and the server keeps serving', async () => {
  const instance = await addInstance(tenantA, 'running');
  await serveInstance(instance, 'steady');
  const hosts: (string | Buffer)[] = [
    '',
    `agents.localhost:${port}`,
    `a..agents.localhost:${port}`,
    `x.agents.localhost:${port}`,
    `${instance.subdomain}x.agents.localhost:${port}`,
    `${instance.subdomain.slice(1)}.agents.localhost:${port}`,
    `a.${instance.subdomain}.agents.localhost:${port}`,
    `${instance.subdomain}.agents.localhost.:${port}`,
    `${instance.subdomain}.agents.localhost:65536`,
    `${instance.subdomain}.agents.localhost:99999999`,
    `${instance.subdomain}.agents.localhost:`,
    `${instance.subdomain}.agents.localhost:80:80`,
    `${'a'.repeat(8000)}.agents.localhost`,
    Buffer.from(`${instance.subdomain.slice(0, 9)}\u00e9.agents.localhost`, 'latin1'),
    Buffer.from([
      ...Buffer.from(instance.subdomain.slice(0, 8)),
      0xe2,
      0x84,
      0xaa,
      ...Buffer.from('.agents.localhost'),
    ]),
  ];
  for (const host of hosts) {
    const answer = await sendRaw(
      Buffer.concat([
        Buffer.from('GET / HTTP/1.1\r\nHost: '),
        Buffer.from(host),
        Buffer.from('\r\nConnection: close\r\n\r\n'),
      ]),
    );
    const label = host.toString().slice(0, 60);
    if (host === '') {
      // An empty Host is not under the agents domain: the platform answers it, as before.
      assert.doesNotMatch(statusOf(answer), / 5\d\d /, label);
      continue;
    }
    assert.equal(statusOf(answer), 'HTTP/1.1 400 Bad Request', label);
    assert.match(answer, /\r\n\r\nBad request: malformed Host/, label);
    // The same, asking to upgrade.
    const upgraded = await sendRaw(
      Buffer.concat([
        Buffer.from('GET / HTTP/1.1\r\nHost: '),
        Buffer.from(host),
        Buffer.from('\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n'),
      ]),
    );
    assert.equal(statusOf(upgraded), 'HTTP/1.1 400 Bad Request', `upgrade ${label}`);
  }
  // An absolute-form target would name a second host: refused too.
  const absolute = await sendRaw(
    `GET http://localhost:${port}/healthz HTTP/1.1\r\nHost: ${instance.host}\r\nConnection: close\r\n\r\n`,
  );
  assert.equal(statusOf(absolute), 'HTTP/1.1 400 Bad Request');
  // Odd but parseable requests reach the instance (or get a 400), never a 5xx.
  for (const request of [
    Buffer.concat([
      Buffer.from('GET /caf'),
      Buffer.from([0xe9]),
      Buffer.from(`?q=%00 HTTP/1.1\r\nHost: ${instance.host}\r\nX-Odd: `),
      Buffer.from([0xff, 0x80]),
      Buffer.from('\r\nConnection: close\r\n\r\n'),
    ]),
    `OPTIONS * HTTP/1.1\r\nHost: ${instance.host}\r\nConnection: close\r\n\r\n`,
    `GET / HTTP/1.0\r\nHost: ${instance.host}\r\n\r\n`,
  ]) {
    assert.match(
      statusOf(await sendRaw(request)),
      /^HTTP\/1\.[01] [24]\d\d /,
      request.toString().slice(0, 40),
    );
  }
  assert.equal(json(await send(instance.host)).instance, 'steady');
  assert.equal((await send(`127.0.0.1:${port}`, { path: '/healthz' })).status, 200);
});

test('AGT-3: request and response bodies stream through (5 MiB each way)', async () => {
  const instance = await addInstance(tenantB, 'running');
  await serveInstance(instance, 'bulk');

  // Upload: the second half is sent only once the instance has the first, so a buffering proxy would hang.
  uploadStarted = Promise.withResolvers<void>();
  const upload = randomBytes(5 * MIB);
  const uploaded = new Promise<Answer>((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/upload',
        headers: { host: instance.host, 'content-type': 'application/octet-stream' },
        agent: false,
      },
      (res) => collect(res).then(resolve, reject),
    );
    req.on('error', reject);
    req.write(upload.subarray(0, MIB));
    void uploadStarted.promise.then(() => req.end(upload.subarray(MIB)));
  });
  const answer = await uploaded;
  assert.equal(answer.status, 200);
  assert.deepEqual(JSON.parse(answer.body.toString('utf8')), {
    bytes: upload.length,
    sha256: createHash('sha256').update(upload).digest('hex'),
  });

  // Download: the instance sends the rest only once the client has the first chunk.
  downloadMayFinish = Promise.withResolvers<void>();
  const downloaded = await new Promise<{ bytes: number; sha256: string }>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: '/download', headers: { host: instance.host }, agent: false },
      (res) => {
        const digest = createHash('sha256');
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          digest.update(chunk);
          downloadMayFinish.resolve();
        });
        res.on('end', () => resolve({ bytes, sha256: digest.digest('hex') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
  const expected = createHash('sha256');
  for (let i = 0; i < 80; i++) expected.update(downloadChunk(i));
  assert.deepEqual(downloaded, { bytes: 5 * MIB, sha256: expected.digest('hex') });
});

test('AGT-3: a WebSocket-style upgrade tunnels bytes both ways', async () => {
  const instance = await addInstance(tenantA, 'running');
  await serveInstance(instance, 'tunnel');
  const opened = await upgrade(instance.host, { cookie: `${SESSION_COOKIE}=s%3Aplatform.sig; theme=dark` });
  assert.ok('tunnel' in opened);
  assert.equal(opened.response.statusCode, 101);
  assert.equal(opened.response.headers['x-instance'], 'tunnel');
  assert.equal(opened.response.headers.upgrade, 'echo');
  // The upgrade request obeyed the same header rules, and so did the 101.
  assert.equal(opened.response.headers['x-seen-cookie'], 'theme=dark');
  assert.deepEqual(opened.response.headers['set-cookie'], ['kept=1']);
  assert.equal(await echoThrough(opened.tunnel, 'ping through the ingress'), 'ping through the ingress');
  opened.tunnel.destroy();
});

test('AGT-3: the platform session cookie and forwarding claims never reach the instance', async () => {
  const instance = await addInstance(tenantB, 'running');
  await serveInstance(instance, 'headers');
  const seen = json(
    await send(instance.host, {
      headers: {
        cookie: `${SESSION_COOKIE}=s%3Atoken.signature; theme=dark; enclave_other=x; lang=en`,
        'x-forwarded-for': '203.0.113.66',
        'x-forwarded-proto': 'https',
        'x-forwarded-host': 'enclave.example.com',
        forwarded: 'for=203.0.113.66;proto=https',
        'x-real-ip': '203.0.113.66',
        connection: 'keep-alive, x-hop',
        'x-hop': 'connection-scoped',
        te: 'trailers',
        'proxy-authorization': 'Basic c2VjcmV0',
        'x-kept': 'end to end',
      },
    }),
  ).headers;
  assert.equal(seen.cookie, 'theme=dark; lang=en');
  assert.equal(seen['x-forwarded-for'], '127.0.0.1');
  assert.equal(seen['x-forwarded-proto'], 'http');
  assert.equal(seen['x-forwarded-host'], instance.host);
  assert.equal(seen.host, instance.host);
  for (const name of ['forwarded', 'x-real-ip', 'x-hop', 'te', 'proxy-authorization']) {
    assert.equal(seen[name], undefined, name);
  }
  assert.equal(seen['x-kept'], 'end to end');
  // Only the platform's cookie: the header goes entirely.
  const alone = json(
    await send(instance.host, { headers: { cookie: `${SESSION_COOKIE}=s%3Atoken.signature` } }),
  );
  assert.equal(alone.headers.cookie, undefined);
  assert.ok(SESSION_COOKIE.startsWith(PLATFORM_COOKIE_PREFIX));
});

test('AGT-3: behind a proxy the operator trusts, the instance hears of the client the proxy reports, over the public scheme', async () => {
  const instance = await addInstance(tenantB, 'running');
  await serveInstance(instance, 'headers');
  const proxied = await buildTestApp(ctx.db, {
    ENCLAVE_DATA_DIR: dataDir,
    ENCLAVE_TRUST_PROXY: '127.0.0.1',
    ENCLAVE_PUBLIC_URL: 'https://enclave.example.com',
  });
  await proxied.app.listen({ port: 0, host: '127.0.0.1' });
  try {
    const proxiedPort = (proxied.app.server.address() as AddressInfo).port;
    const seen = await new Promise<Answer>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: proxiedPort,
          headers: { host: instance.host, 'x-forwarded-for': '198.51.100.7, 203.0.113.9' },
          agent: false,
        },
        (res) => collect(res).then(resolve, reject),
      );
      req.on('error', reject);
      req.end();
    });
    const headers = json(seen).headers;
    // The trusted hop (127.0.0.1) reported 203.0.113.9; the address before it is the client's own claim.
    assert.equal(headers['x-forwarded-for'], '203.0.113.9');
    assert.equal(headers['x-forwarded-proto'], 'https');
  } finally {
    await proxied.app.close();
  }
});

test('AGT-3: an instance cannot set cookies outside its own host', async () => {
  const instance = await addInstance(tenantA, 'running');
  await serveInstance(instance, 'cookies');
  const answer = await send(instance.host, { path: '/cookies' });
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.headers['set-cookie'], [
    'plain=1; Path=/',
    `own=2; Domain=${instance.subdomain}.${DOMAIN}; Path=/`,
    `own_dot=3; domain=.${instance.subdomain.toUpperCase()}.${DOMAIN}`,
  ]);
});

test('AGT-3: failures on either side end the other, and the server keeps serving', async () => {
  const instance = await addInstance(tenantB, 'running');
  await serveInstance(instance, 'faults');

  // The client gives up: the request to the instance is torn down too.
  hungRequestClosed = Promise.withResolvers<void>();
  const req = http.request({
    host: '127.0.0.1',
    port,
    path: '/hang',
    headers: { host: instance.host },
    agent: false,
  });
  req.on('error', () => {});
  req.end();
  await new Promise((resolve) => setTimeout(resolve, 100));
  req.destroy();
  await hungRequestClosed.promise;

  // The instance accepts and hangs up without answering: 502, not the 404 (it is there).
  const reset = await send(instance.host, { path: '/reset' });
  assert.equal(reset.status, 502);
  assert.equal(reset.headers['cache-control'], 'no-store');

  // An open tunnel ends when the instance's end of it goes away.
  const opened = await upgrade(instance.host);
  assert.ok('tunnel' in opened);
  assert.equal(await echoThrough(opened.tunnel, 'still there'), 'still there');
  const ended = once(opened.tunnel, 'close');
  for (const socket of upgradedSockets) socket.destroy();
  await ended;
  assert.equal(json(await send(instance.host)).instance, 'faults');
});

test('AGT-3: closing the server ends open tunnels instead of waiting for them', async () => {
  const instance = await addInstance(tenantA, 'running');
  await serveInstance(instance, 'closing');
  const second = await buildTestApp(ctx.db, { ENCLAVE_DATA_DIR: dataDir });
  await second.app.listen({ port: 0, host: '127.0.0.1' });
  const secondPort = (second.app.server.address() as AddressInfo).port;
  const opened = await new Promise<Duplex>((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port: secondPort,
      headers: { host: `${instance.subdomain}.${DOMAIN}`, connection: 'Upgrade', upgrade: 'echo' },
      agent: false,
    });
    req.on('upgrade', (_res, tunnel: Duplex) => resolve(tunnel));
    req.on('error', reject);
    req.end();
  });
  const ended = once(opened, 'close');
  await second.app.close();
  await ended;
});

test('AGT-3: no info-level log line carries a subdomain or a proxied path', async () => {
  const instance = await addInstance(tenantB, 'running');
  await serveInstance(instance, 'logs');
  await send(instance.host, { path: '/secret-path-canary' });
  await send(`${newSubdomain('ec')}.${DOMAIN}:${port}`, { path: '/secret-path-canary' });
  await send(`x.${DOMAIN}:${port}`, { path: '/secret-path-canary' });
  const subdomains = (
    await ctx.db.superuser<{ subdomain: string }[]>`select subdomain from agent_instances`
  ).map((row) => row.subdomain);
  assert.ok(subdomains.length >= 10);
  const lines = ctx.testApp.logLines();
  const ingressLines = lines.filter((line) => line.includes('"msg":"ingress request"'));
  assert.ok(ingressLines.length >= 3);
  for (const line of lines) {
    for (const subdomain of subdomains)
      assert.ok(!line.includes(subdomain), `log line carries a subdomain: ${line}`);
    assert.ok(!line.includes(DOMAIN), `log line carries a Host: ${line}`);
    assert.ok(!line.includes('secret-path-canary'), `log line carries a path: ${line}`);
  }
});

/** A request head as raw text; `close` asks the server to close the connection after answering it. */
function rawRequest(host: string, target = '/', close = false): string {
  return `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
}

const statusesOf = (raw: string): string[] =>
  [...raw.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1] ?? '');

test('AGT-3: on one kept-alive connection each request goes where its own Host says, with its body, pipelined or one by one', async () => {
  const first = await addInstance(tenantA, 'running');
  await serveInstance(first, 'first');
  const second = await addInstance(tenantB, 'running');
  await serveInstance(second, 'second');
  // All at once on one connection: two instances, the first again, an unknown name, then the platform.
  const answer = await sendRaw(
    rawRequest(first.host) +
      rawRequest(second.host) +
      `POST /upload HTTP/1.1\r\nHost: ${first.host}\r\nContent-Length: 11\r\n\r\nhello world` +
      rawRequest(first.host, '/again') +
      rawRequest(`${newSubdomain('ec')}.${DOMAIN}:${port}`) +
      rawRequest(`127.0.0.1:${port}`, '/healthz', true),
  );
  assert.deepEqual(statusesOf(answer), ['200', '200', '200', '200', '404', '200']);
  // The body went with its request, and the bytes after it were read as the next request.
  assert.match(answer, /\{"bytes":11,"sha256":"[0-9a-f]{64}"\}/);
  assert.deepEqual(
    [...answer.matchAll(/"instance":"(\w+)","method":"GET","url":"([^"]*)"/g)].map((m) => `${m[1]} ${m[2]}`),
    ['first /', 'second /', 'first /again'],
  );
  assert.match(answer, /\{"status":"ok"\}/);

  // One by one over a kept-alive connection, as a browser sends them.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const seen: string[] = [];
    for (const host of [first.host, second.host, first.host]) {
      const res = await new Promise<{ answer: Answer; reused: boolean }>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, headers: { host }, agent }, (res) =>
          collect(res).then((answer) => resolve({ answer, reused: req.reusedSocket }), reject),
        );
        req.on('error', reject);
        req.end();
      });
      seen.push(`${json(res.answer).instance} ${res.reused}`);
    }
    assert.deepEqual(seen, ['first false', 'second true', 'first true']);
  } finally {
    agent.destroy();
  }
});

test('AGT-3: ambiguous framing, obs-fold, bad bytes and oversize heads get the same 4xx on a kept-alive connection as on a new one, and nothing is smuggled', async () => {
  const instance = await addInstance(tenantA, 'running');
  await serveInstance(instance, 'framing');
  const smuggled = rawRequest(instance.host, '/smuggled');
  const bad: [string, string][] = [
    [
      'Content-Length and Transfer-Encoding',
      `POST /upload HTTP/1.1\r\nHost: ${instance.host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${smuggled}`,
    ],
    [
      'two Content-Lengths',
      `POST /upload HTTP/1.1\r\nHost: ${instance.host}\r\nContent-Length: 0\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}`,
    ],
    ['obs-fold', `GET / HTTP/1.1\r\nHost: ${instance.host}\r\nX-Folded: a\r\n b\r\n\r\n`],
    ['a NUL in a value', `GET / HTTP/1.1\r\nHost: ${instance.host}\r\nX-Bad: a\u0000b\r\n\r\n`],
    ['a bare LF', `GET / HTTP/1.1\r\nHost: ${instance.host}\nX-Bad: a\r\n\r\n`],
    ['an oversize head', `GET / HTTP/1.1\r\nHost: ${instance.host}\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`],
  ];
  for (const [label, request] of bad) {
    const alone = statusesOf(await sendRaw(request));
    assert.equal(alone.length, 1, label);
    assert.match(alone[0] ?? '', /^4\d\d$/, label);
    const after = await sendRaw(rawRequest(instance.host) + request);
    assert.deepEqual(statusesOf(after), ['200', ...alone], label);
    assert.ok(!after.includes('"url":"/smuggled"'), label);
  }
});

/** An instance that writes `answers[path]` as raw bytes for each request head it reads. */
async function serveRawInstance(instance: Instance, answers: Record<string, string>): Promise<net.Server> {
  const server = net.createServer((socket) => {
    let pending = '';
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end !== -1; end = pending.indexOf('\r\n\r\n')) {
        const target = pending.slice(0, end).split(' ')[1] ?? '';
        pending = pending.slice(end + 4);
        socket.write(answers[target] ?? 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      }
    });
  });
  mkdirSync(path.dirname(instance.socketPath), { recursive: true, mode: 0o711 });
  await listenHostSocket(path.dirname(instance.socketPath), 'ingress.sock', 0o600, server);
  rawServers.add(server);
  return server;
}

const rawServers = new Set<net.Server>();
ctx.after(() => {
  for (const server of rawServers) server.close();
});

test('AGT-3: an instance cannot pass bytes past the end of its response off as the answer to the next request, nor frame it ambiguously', async () => {
  const instance = await addInstance(tenantB, 'running');
  const fake = 'HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled';
  await serveRawInstance(instance, {
    '/extra': `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok${fake}`,
    '/both': 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    '/lengths': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!',
    '/gzip': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n',
    '/chunked': 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
    '/http10': 'HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok',
    '/closing': 'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok',
    '/chunk-extension': `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n0\r\n\r\n${fake}`,
    '/folded': 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Folded: a\r\n b\r\n\r\nok',
    '/early-hints':
      'HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
  });
  // Bytes past the end are dropped with the instance's connection: the next request gets its own answer.
  const twice = await sendRaw(
    rawRequest(instance.host, '/extra') + rawRequest(instance.host, '/extra', true),
  );
  assert.deepEqual(statusesOf(twice), ['200', '200']);
  assert.ok(!twice.includes('smuggled'));
  for (const target of ['/both', '/lengths', '/gzip', '/folded']) {
    assert.equal((await send(instance.host, { path: target })).status, 502, target);
  }
  const chunked = await sendRaw(
    rawRequest(instance.host, '/chunked') + rawRequest(instance.host, '/chunked', true),
  );
  assert.deepEqual(statusesOf(chunked), ['200', '200']);
  // An instance that closes its end after answering (HTTP/1.0, Connection: close) gets a new connection for the next.
  const closing = await sendRaw(
    rawRequest(instance.host, '/http10') +
      rawRequest(instance.host, '/closing') +
      rawRequest(instance.host, '/http10', true),
  );
  assert.deepEqual(statusesOf(closing), ['200', '200', '200']);
  // Nothing after a request that asked to close is read as another.
  const closed = await sendRaw(
    rawRequest(instance.host, '/chunked', true) + rawRequest(instance.host, '/chunked'),
  );
  assert.deepEqual(statusesOf(closed), ['200']);
  // A chunk form two parsers could read apart is never passed on.
  const extension = await sendRaw(rawRequest(instance.host, '/chunk-extension'));
  assert.deepEqual(statusesOf(extension), ['502']);
  assert.ok(!extension.includes('smuggled'));
  const hinted = await sendRaw(rawRequest(instance.host, '/early-hints', true));
  assert.deepEqual(statusesOf(hinted), ['200']);
  assert.match(hinted, /\r\n\r\nok$/);
});
