import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createEgressProxy } from '../src/agents/egress/proxy.ts';
import { createBwrapDriver } from '../src/agents/runtime/bwrap-driver.ts';
import { BUILT_IN_TEMPLATES_DIR, DEFAULT_LIMITS } from '../src/agents/templates.ts';
import { withTenant } from '../src/db/tenant.ts';
import { freePort } from '../src/free-port.ts';
import { createLogger } from '../src/logger.ts';
import { createTenant } from '../test/helpers/audit.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { hasTool } from '../test/helpers/system-tools.ts';
import { median, summarize } from './ab.ts';

// `npm run bench -- cold-start` (AGT-2, AGT-6): from driver.start() to the
// echo agent answering through its ingress socket — the instance directory,
// bubblewrap, the supervisor, the egress listener, the agent's own start —
// against the same echo agent started as a plain `node` process until it
// answers on its port (polled every 5 ms). One of each per round, the order
// alternating (bench/ab.ts); only the start is timed, not the stop. The
// ratio of times is what the sandbox adds to a cold start.

const ROUNDS = 12;

function get(options: http.RequestOptions): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.get({ ...options, path: '/', timeout: 1000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    request.on('error', () => resolve(false));
    request.on('timeout', () => request.destroy());
  });
}

async function plainStart(): Promise<number> {
  const port = await freePort();
  const started = performance.now();
  const child = spawn(process.execPath, [path.join(BUILT_IN_TEMPLATES_DIR, 'echo', 'agent.mjs')], {
    env: { PATH: process.env.PATH ?? '', PORT: String(port) },
    stdio: 'ignore',
  });
  while (!(await get({ host: '127.0.0.1', port }))) await new Promise((next) => setTimeout(next, 5));
  const ms = performance.now() - started;
  child.kill('SIGTERM');
  await once(child, 'exit');
  return ms;
}

export async function runColdStartBench(db: TestDatabase): Promise<void> {
  if (!hasTool('bwrap')) {
    console.log('\ninstance cold start: skipped (bubblewrap is not installed)');
    return;
  }
  const dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-bench-runtime-'));
  await chmod(dataDir, 0o711);
  const instancesDir = path.join(dataDir, 'instances');
  await mkdir(instancesDir, { mode: 0o711 });
  const logger = createLogger('silent');
  const driver = createBwrapDriver({
    instancesDir,
    egress: createEgressProxy({ sql: db.app, logger, allow: [] }),
    logger,
  });
  try {
    const tenantId = await createTenant(db, 'cold start bench');
    const [agent] = await withTenant(
      db.app,
      tenantId,
      (tx) => tx<{ id: string }[]>`
        insert into agents (tenant_id, handle, name, template_id)
        values (${tenantId}::uuid, 'bench-cold-start', 'Bench', 'echo') returning id`,
    );
    const agentId = agent?.id ?? '';
    const sandboxedStart = async (): Promise<number> => {
      const started = performance.now();
      await driver.start({
        agentId,
        tenantId,
        command: ['node', 'echo/agent.mjs'],
        templateDir: BUILT_IN_TEMPLATES_DIR,
        port: 8080,
        limits: DEFAULT_LIMITS,
        egress: { tenantId, agentId, allowlist: undefined },
        modelGateway: false,
        env: {},
        secrets: new Map(),
        supportKey: undefined,
      });
      const ms = performance.now() - started;
      await driver.stop(agentId);
      return ms;
    };
    // Warm-up: the first start detects the host (cached by the driver) and fills the page cache.
    await sandboxedStart();
    await plainStart();
    const sandboxed: number[] = [];
    const plain: number[] = [];
    const perRound: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const took = new Map<() => Promise<number>, number>();
      for (const side of round % 2 === 0 ? [sandboxedStart, plainStart] : [plainStart, sandboxedStart]) {
        took.set(side, await side());
      }
      const [a, b] = [took.get(sandboxedStart) ?? Number.NaN, took.get(plainStart) ?? Number.NaN];
      sandboxed.push(a);
      plain.push(b);
      perRound.push(a / b);
    }
    const report = summarize(
      {
        name: 'instance cold start vs a bare spawn',
        ratio: 'time',
        a: { label: 'sandboxed echo answering through its ingress socket' },
        b: { label: 'plain node echo answering on its port' },
        aim: { atMost: 1.5 },
      },
      perRound,
      { a: median(sandboxed), b: median(plain) },
    );
    console.log(
      `\n${report.name}: time of ${report.a} vs ${report.b}, ${ROUNDS} alternating rounds` +
        `\n  min ${report.min.toFixed(2)}×  median ${report.median.toFixed(2)}×  max ${report.max.toFixed(2)}×` +
        `  (${report.msPerOp.a.toFixed(0)} vs ${report.msPerOp.b.toFixed(0)} ms)` +
        (report.noisy ? '  NOISY: spread over 30% of the median' : '') +
        `  aim ≤ 1.5×: ${report.met === true ? 'met' : 'MISSED'}`,
    );
  } finally {
    await driver.stopAll();
    await rm(dataDir, { recursive: true, force: true });
  }
}
