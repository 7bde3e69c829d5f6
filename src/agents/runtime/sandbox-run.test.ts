import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, test } from 'node:test';
import { DEFAULT_LIMITS } from '../templates.ts';
import type { InstanceSpec } from './driver.ts';
import { listenHostSocket } from './host-sockets.ts';
import { type Run, waitReady } from './sandbox-run.ts';
import { createControlChannel } from './supervisor-channel.ts';

// The attack: the supervisor shares the agent's uid, so its words on the
// control channel are the instance's. Saying "the agent listens" early may
// bring the driver's probe forward, never make an instance count as ready.

const dir = await mkdtemp(path.join(tmpdir(), 'enclave-wait-ready-'));
after(() => rm(dir, { recursive: true, force: true }));

const spec: InstanceSpec = {
  agentId: 'wait-ready',
  tenantId: 'wait-ready',
  command: ['node', 'agent.mjs'],
  templateDir: dir,
  port: 8080,
  limits: DEFAULT_LIMITS,
  egress: { tenantId: 'wait-ready', agentId: 'wait-ready', allowlist: undefined },
  modelGateway: false,
  env: {},
  secrets: new Map(),
  supportKey: undefined,
};

/** A launched sandbox as waitReady sees it: a control channel the test speaks on as the supervisor. */
async function fakeRun(name: string): Promise<{ run: Run; say: (event: string) => void }> {
  const hostDir = path.join(dir, name);
  await mkdir(hostDir, { mode: 0o711 });
  const stream = new PassThrough();
  const control = createControlChannel(stream);
  const run = {
    control,
    ingressSocket: path.join(hostDir, 'ingress.sock'),
    done: new Promise(() => undefined),
  };
  return { run: run as unknown as Run, say: (event) => stream.write(`{"event":"${event}"}\n`) };
}

test('AGT-6: a supervisor saying the agent listens does not make an instance ready while its ingress socket does not answer', async () => {
  const { run, say } = await fakeRun('lying');
  say('listening');
  say('agent-listening');
  await run.control.agentListening;
  await assert.rejects(
    waitReady(run, spec, 300, new AbortController().signal),
    /did not open port 8080 within/,
  );
});

test('AGT-6: told the agent listens, the driver finds the instance ready once its ingress socket answers', async () => {
  const { run, say } = await fakeRun('honest');
  say('listening');
  const ready = waitReady(run, spec, 20_000, new AbortController().signal);
  const server = http.createServer((_req, res) => res.end('ok'));
  await listenHostSocket(path.dirname(run.ingressSocket), 'ingress.sock', 0o600, server);
  try {
    say('agent-listening'); // what the supervisor's port watch reports once the agent accepts
    await ready;
  } finally {
    server.close();
  }
});
