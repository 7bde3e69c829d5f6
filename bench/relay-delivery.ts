import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { WorkerEvents } from 'graphile-worker';
import { newSubdomain } from '../src/agents/ingress/subdomain.ts';
import { hostDirOf, listenHostSocket } from '../src/agents/runtime/host-sockets.ts';
import { BUILT_IN_TEMPLATES_DIR } from '../src/agents/templates.ts';
import { withTenant } from '../src/db/tenant.ts';
import type { Worker } from '../src/jobs/worker.ts';
import { resolveRelayToken } from '../src/relay/connections.ts';
import { deliveryRequest } from '../src/relay/delivery.ts';
import { listMessages, postCallerMessage, startThread } from '../src/relay/threads.ts';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp, type TestAppContext } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { approvedConnection, relayAgent } from '../test/helpers/relay.ts';
import { startTestWorker } from '../test/helpers/runtime.ts';
import { compare, percentile } from './ab.ts';

// `npm run bench -- relay-delivery` (issue #15 item 5): the end-to-end
// latency of a relay message, from the caller message written (its
// transaction, which enqueues relay_deliver) to the echo agent's reply
// readable in the thread: the worker takes the job, loads the message, POSTs
// it through the instance's ingress socket, records the answer. Against the
// baseline of the same relay JSON POSTed straight to the echo instance
// through the ingress, as a client of the agent's subdomain would. One message
// at a time (latency, not throughput); p50 and p99 of the relay side are
// printed from every measured message. The echo agent is the real
// templates/echo/agent.mjs in its own process; its TCP port is reached from
// the instance socket by a byte pipe, which both sides pass through.

const OPS_PER_ROUND = 15;

export async function runRelayDeliveryBench(db: TestDatabase): Promise<void> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-bench-relay-'));
  const testApp = await buildTestApp(db, { ENCLAVE_DATA_DIR: dataDir }, { passwordCost: 'production' });
  const events: WorkerEvents = new EventEmitter();
  let echo: ChildProcess | undefined;
  let pipe: net.Server | undefined;
  let worker: Worker | undefined;
  const client = new http.Agent({ keepAlive: true });
  try {
    const ctx = { db, testApp } as Pick<TestAppContext, 'db' | 'testApp'> as TestAppContext;
    const owner = await createAccount(db, testApp);
    const asker = await createAccount(db, testApp);
    const target = await relayAgent(ctx, owner);
    const grant = await resolveRelayToken(
      db.app,
      (await approvedConnection(ctx, owner, asker, target)).relayToken,
    );
    if (grant === undefined) throw new Error('relay bench: the grant did not resolve');
    const subdomain = newSubdomain('ec');
    await db.superuser`
      insert into agent_instances (agent_id, tenant_id, subdomain, state, desired_state)
      values (${target.id}::uuid, ${grant.targetTenantId}::uuid, ${subdomain}, 'running', 'running')`;

    // The real echo agent, and its instance socket (where the driver binds it) piped to its port.
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const echoPort = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    echo = spawn(process.execPath, [path.join(BUILT_IN_TEMPLATES_DIR, 'echo', 'agent.mjs')], {
      env: { PORT: String(echoPort), PATH: process.env.PATH ?? '' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await once(echo.stdout ?? echo, 'data');
    pipe = net.createServer((socket) => {
      const upstream = net.connect(echoPort, '127.0.0.1');
      socket.pipe(upstream).pipe(socket);
      socket.on('error', () => upstream.destroy());
      upstream.on('error', () => socket.destroy());
    });
    const hostDir = hostDirOf(testApp.config.instancesDir, target.id);
    await mkdir(hostDir, { recursive: true, mode: 0o711 });
    await listenHostSocket(hostDir, 'ingress.sock', 0o600, pipe);

    worker = await startTestWorker({ db, testApp }, { workerId: `relay-bench-${process.pid}`, events });
    const asTarget = <T>(fn: Parameters<typeof withTenant<T>>[2]) =>
      withTenant(db.app, grant.targetTenantId, fn);
    const { thread } = await asTarget((tx) => startThread(tx, grant, 'opening the bench thread'));

    // A relay_deliver job that finished, by message id: the relay side waits for its own. The
    // callback fan-out of the same message carries its id too, and may finish first.
    const finished = new Map<string, () => void>();
    events.on('job:complete', ({ job }) => {
      if (job.task_identifier !== 'relay_deliver') return;
      const messageId = (job.payload as { message_id?: string } | null)?.message_id;
      if (messageId !== undefined) finished.get(messageId)?.();
    });
    const latencies: number[] = [];
    let n = 0;
    const relayed = async () => {
      const started = performance.now();
      const text = `bench message ${n++}`;
      let done: (() => void) | undefined;
      const completed = new Promise<void>((resolve) => {
        done = resolve;
      });
      const message = await asTarget((tx) => postCallerMessage(tx, grant, thread.id, text));
      if (done !== undefined) finished.set(message.id, done);
      // The job may have finished before its waiter was set: then the reply is already there.
      const answered = async () =>
        (await asTarget((tx) => listMessages(tx, thread.id, { afterSeq: message.seq, limit: 1 }))).some(
          (m) => m.reply_to === message.id,
        );
      if (!(await answered())) {
        await completed;
        if (!(await answered())) throw new Error('relay bench: the job ended with no reply');
      }
      finished.delete(message.id);
      latencies.push(performance.now() - started);
    };

    await testApp.app.listen({ port: 0, host: '127.0.0.1' });
    const port = (testApp.app.server.address() as AddressInfo).port;
    const body = JSON.stringify(deliveryRequest(thread.id, thread.id, null, 'bench message'));
    const direct = () =>
      new Promise<void>((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port,
            method: 'POST',
            path: '/messages',
            agent: client,
            headers: {
              host: `${subdomain}.${testApp.config.agentsDomain}:${port}`,
              'content-type': 'application/json',
              'content-length': Buffer.byteLength(body),
            },
          },
          (res) => {
            if (res.statusCode !== 200)
              reject(new Error(`relay bench: direct POST answered ${res.statusCode}`));
            res.resume();
            res.on('end', resolve);
          },
        );
        req.on('error', reject);
        req.end(body);
      });

    await compare({
      name: 'relay delivery end to end vs a direct POST through the ingress',
      ratio: 'time',
      per: { ops: OPS_PER_ROUND },
      a: { label: 'caller message written → echo reply readable', op: relayed },
      b: { label: 'POST /messages to echo through the ingress', op: direct },
    });
    const sorted = [...latencies].sort((x, y) => x - y);
    console.log(
      `  relay delivery latency over ${sorted.length} messages: p50 ${percentile(sorted, 50).toFixed(1)} ms, ` +
        `p99 ${percentile(sorted, 99).toFixed(1)} ms`,
    );
  } finally {
    client.destroy();
    await worker?.stop();
    await testApp.app.close();
    echo?.kill('SIGTERM');
    pipe?.close();
    await rm(dataDir, { recursive: true, force: true });
  }
}
