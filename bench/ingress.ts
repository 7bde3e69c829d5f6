import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { newSubdomain } from '../src/agents/ingress/subdomain.ts';
import { hostDirOf, listenHostSocket } from '../src/agents/runtime/host-sockets.ts';
import { withTenant } from '../src/db/tenant.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import { createTenant } from '../test/helpers/audit.ts';
import type { TestDatabase } from '../test/helpers/database.ts';

// `npm run bench`, the ingress part (AGT-3): what the ingress costs a request.
// A small GET through the listening app — Host parsing, the subdomain lookup
// (one withLookup transaction), header rules, the hop over the instance's
// Unix socket — against the same GET sent straight to that socket, both
// over keep-alive connections from CONCURRENCY loops, in alternating rounds
// so a noisy neighbour hits both alike. Reported as a ratio of throughputs.
// Client, ingress and fake instance share this one thread, so the ingress's
// extra parse-and-serialize of each request and response counts in full:
// the ratio is a floor, not what a separate agent process would see.

const CONCURRENCY = 16;
const ROUNDS = 6;
const ROUND_MS = 1000;
const WARMUP_MS = 500;

/** Runs `op` from `loops` concurrent loops for `ms`; how many completed. */
async function runFor(loops: number, ms: number, op: () => Promise<void>): Promise<number> {
  const end = performance.now() + ms;
  let done = 0;
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (performance.now() < end) {
        await op();
        done++;
      }
    }),
  );
  return done;
}

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

export async function runIngressBench(db: TestDatabase): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-bench-ingress-'));
  const testApp = await buildTestApp(db, { ENCLAVE_DATA_DIR: dataDir });
  const instance = http.createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end('ok');
  });
  const agents = [new http.Agent({ keepAlive: true }), new http.Agent({ keepAlive: true })];
  try {
    const tenantId = await createTenant(db, 'bench ingress');
    const subdomain = newSubdomain('ec');
    const agentId = await withTenant(db.app, tenantId, async (tx) => {
      const [agent] = await tx<{ id: string }[]>`
        insert into agents (tenant_id, handle, name, template_id)
        values (${tenantId}::uuid, ${`bench-${randomUUID().slice(0, 8)}`}, 'Ingress bench', 'echo')
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
    const socketPath = (await listenHostSocket(hostDir, 'ingress.sock', 0o600, instance)).path;
    await testApp.app.listen({ port: 0, host: '127.0.0.1' });
    const port = (testApp.app.server.address() as AddressInfo).port;
    const host = `${subdomain}.${testApp.config.agentsDomain}:${port}`;

    const viaIngress = () => get({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: agents[0] });
    const direct = () => get({ socketPath, path: '/', headers: { host }, agent: agents[1] });
    await runFor(CONCURRENCY, WARMUP_MS, direct);
    await runFor(CONCURRENCY, WARMUP_MS, viaIngress);
    const totals = { direct: { done: 0, ms: 0 }, ingress: { done: 0, ms: 0 } };
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? (['direct', 'ingress'] as const) : (['ingress', 'direct'] as const);
      for (const kind of order) {
        const started = performance.now();
        totals[kind].done += await runFor(CONCURRENCY, ROUND_MS, kind === 'direct' ? direct : viaIngress);
        totals[kind].ms += performance.now() - started;
      }
    }
    const rate = (t: { done: number; ms: number }) => t.done / (t.ms / 1000);
    const ingressRate = rate(totals.ingress);
    const directRate = rate(totals.direct);
    console.log(
      `\nIngress (AGT-3), small GET, ${CONCURRENCY} concurrent keep-alive loops, ${ROUNDS} alternating rounds:` +
        `\n  through the ingress: ${ingressRate.toFixed(0)} req/s; straight to the instance socket: ${directRate.toFixed(0)} req/s` +
        `\n  the ingress keeps ${(ingressRate / directRate).toFixed(2)}× the throughput of a direct request`,
    );
  } finally {
    for (const agent of agents) agent.destroy();
    await testApp.app.close();
    instance.closeAllConnections();
    instance.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
