import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { newSubdomain } from '../src/agents/ingress/subdomain.ts';
import { HostSocketAgent, hostDirOf, listenHostSocket } from '../src/agents/runtime/host-sockets.ts';
import { withTenant } from '../src/db/tenant.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import { createTenant } from '../test/helpers/audit.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { type Aim, compare, type Side } from './ab.ts';

// `npm run bench -- ingress` (AGT-3): what the ingress costs a request. A
// small GET through the listening app — Host parsing, the subdomain lookup,
// header rules, the hop over the instance's Unix socket — against the same
// GET sent straight to that socket, over keep-alive connections from
// CONCURRENCY loops, in interleaved rounds (bench/ab.ts).
//
// The ratios:
// - instance in its own process (the aim): as in production, where the agent
//   runs in its sandbox and only the ingress shares the platform's thread.
//   The load generator stays in this thread, so the ingress's parse and
//   serialize of every request and response still compete with it.
// - everything in one thread: the pessimistic floor; any HTTP proxy at least
//   doubles the HTTP work this one thread does per request.
// - a bare byte pipe vs direct: the ceiling of any proxy that makes the hop in
//   this thread, reading and writing each request and response once and
//   parsing nothing; the ingress cannot beat it, so it bounds the first ratio.
// - the ingress vs that pipe: what reading, checking and rewriting each head costs.
// - the ingress vs a bare Node proxy over the same kind of pooled socket: the
//   share of the cost that is the ingress's own (header rules, lookup, log).

const CONCURRENCY = 16;

/** The fake instance for its own process: answers every request with a small text/plain 200 on fd 3. */
const INSTANCE_SOURCE = `require('node:http').createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end('ok');
}).listen({ fd: 3 }, () => process.send('listening'));`;

function get(options: http.RequestOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get(options, (res) => {
      if (res.statusCode !== 200) reject(new Error(`ingress bench: status ${res.statusCode}`));
      res.resume();
      res.on('end', resolve);
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** The least any proxy that makes the hop can do: each client connection piped as bytes to its own instance connection. */
function bytePipe(socketPath: string): net.Server {
  return net.createServer((client) => {
    const upstream = net.connect(socketPath);
    client.pipe(upstream).on('error', () => client.destroy());
    upstream.pipe(client).on('error', () => upstream.destroy());
  });
}

/** `server` listening on a loopback port of its own; the port. */
async function listening(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A proxy with nothing of the ingress's rules: the same pooled hop, headers passed as they came. */
function bareProxy(socketPath: string, pool: http.Agent): http.Server {
  return http.createServer((req, res) => {
    const upstream = http.request(
      { socketPath, method: req.method, path: req.url, headers: req.headers, agent: pool },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.rawHeaders);
        upRes.pipe(res);
      },
    );
    req.pipe(upstream);
  });
}

export async function runIngressBench(db: TestDatabase): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-bench-ingress-'));
  const testApp = await buildTestApp(db, { ENCLAVE_DATA_DIR: dataDir }, { passwordCost: 'production' });
  const inThread = http.createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('ok');
  });
  const clients: http.Agent[] = [];
  const client = () => {
    const agent = new http.Agent({ keepAlive: true });
    clients.push(agent);
    return agent;
  };
  const bare = new HostSocketAgent({ keepAlive: true, maxFreeSockets: CONCURRENCY });
  let child: ReturnType<typeof spawn> | undefined;
  let bareServer: http.Server | undefined;
  let pipeServer: net.Server | undefined;
  try {
    const tenantId = await createTenant(db, 'bench ingress');
    // Two agents: one whose instance runs in this thread, one whose instance runs in its own process.
    const instance = async (where: string) => {
      const subdomain = newSubdomain('ec');
      const agentId = await withTenant(db.app, tenantId, async (tx) => {
        const [agent] = await tx<{ id: string }[]>`
          insert into agents (tenant_id, handle, name, template_id)
          values (${tenantId}::uuid, ${`bench-${randomUUID().slice(0, 8)}`}, ${`Ingress bench ${where}`}, 'echo')
          returning id::text`;
        if (agent === undefined) throw new Error('ingress bench: no agent row');
        await tx`
          insert into agent_instances (agent_id, tenant_id, subdomain, state, desired_state)
          values (${agent.id}::uuid, ${tenantId}::uuid, ${subdomain}, 'running', 'running')`;
        return agent.id;
      });
      // As the driver binds it: in the instance's host directory, its inode remembered (host-sockets.ts).
      const hostDir = hostDirOf(testApp.config.instancesDir, agentId);
      await mkdir(hostDir, { recursive: true, mode: 0o711 });
      return { subdomain, hostDir };
    };
    const local = await instance('in this thread');
    const localSocket = (await listenHostSocket(local.hostDir, 'ingress.sock', 0o600, inThread)).path;
    const remote = await instance('in its own process');
    const remoteListener = await listenHostSocket(remote.hostDir, 'ingress.sock', 0o600);
    // Handed over as the driver hands it to a sandbox: the child accepts on the descriptor.
    child = spawn(process.execPath, ['-e', INSTANCE_SOURCE], {
      stdio: ['ignore', 'inherit', 'inherit', remoteListener.fd, 'ipc'],
    });
    await once(child, 'message');
    remoteListener.server.close();

    await testApp.app.listen({ port: 0, host: '127.0.0.1' });
    const port = (testApp.app.server.address() as AddressInfo).port;
    const hostOf = (subdomain: string) => `${subdomain}.${testApp.config.agentsDomain}:${port}`;
    /** GETs for `subdomain`'s instance over TCP to `toPort` on loopback, on a keep-alive client of their own. */
    const viaPort = (toPort: number, subdomain: string) => {
      const agent = client();
      const headers = { host: hostOf(subdomain) };
      return () => get({ host: '127.0.0.1', port: toPort, path: '/', headers, agent });
    };
    const through = (subdomain: string) => viaPort(port, subdomain);
    const straight = (socketPath: string, subdomain: string) => {
      const agent = client();
      const headers = { host: hostOf(subdomain) };
      return () => get({ socketPath, path: '/', headers, agent });
    };

    /** The ingress (A) against `b`, in throughput. */
    const ingressVs = (name: string, subdomain: string, b: Side, aim?: Aim) =>
      compare({
        name,
        ratio: 'throughput',
        per: { ms: 1000, concurrency: CONCURRENCY },
        a: { label: 'GET through the ingress', op: through(subdomain) },
        b,
        ...(aim === undefined ? {} : { aim }),
      });
    const direct = 'GET straight to the instance socket';
    await ingressVs(
      'ingress vs direct (instance in its own process)',
      remote.subdomain,
      { label: direct, op: straight(remoteListener.path, remote.subdomain) },
      { atLeast: 0.7 },
    );
    await ingressVs('ingress vs direct (all in one thread)', local.subdomain, {
      label: direct,
      op: straight(localSocket, local.subdomain),
    });
    pipeServer = bytePipe(remoteListener.path);
    const viaPipe = {
      label: 'GET through a bare byte pipe',
      op: viaPort(await listening(pipeServer), remote.subdomain),
    };
    await compare({
      name: 'a bare byte pipe vs direct (instance in its own process)',
      ratio: 'throughput',
      per: { ms: 1000, concurrency: CONCURRENCY },
      a: viaPipe,
      b: { label: direct, op: straight(remoteListener.path, remote.subdomain) },
    });
    await ingressVs('ingress vs a bare byte pipe (instance in its own process)', remote.subdomain, viaPipe);
    bareServer = bareProxy(remoteListener.path, bare);
    await ingressVs('ingress vs a bare Node proxy (instance in its own process)', remote.subdomain, {
      label: 'GET through a bare pooled proxy',
      op: viaPort(await listening(bareServer), remote.subdomain),
    });
  } finally {
    for (const agent of clients) agent.destroy();
    bare.destroy();
    bareServer?.closeAllConnections();
    bareServer?.close();
    pipeServer?.close();
    await testApp.app.close();
    child?.kill();
    inThread.closeAllConnections();
    inThread.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
