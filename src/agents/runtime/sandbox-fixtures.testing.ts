// Test support only (no production code imports this): a runtime for the
// driver and isolation suites — a test database with tenants and agent rows,
// the real egress proxy, a bwrap driver over a temporary data directory —
// and purpose-built probe agents written into temporary template
// directories.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { insertAgent } from '../../../test/helpers/agents.ts';
import { createTenant } from '../../../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../../../test/helpers/database.ts';
import type { UnenforcedLimit } from '../../config.ts';
import { createLogger, type Logger } from '../../logger.ts';
import { createEgressProxy } from '../egress/proxy.ts';
import { createBwrapDriver } from './bwrap-driver.ts';
import type { InstanceExit, InstanceLimits, InstanceSpec, RuntimeDriver } from './driver.ts';

export const REPO_TEMPLATES = path.resolve(import.meta.dirname, '../../../templates');

export const SMALL_LIMITS: InstanceLimits = Object.freeze({
  memoryMb: 192,
  processes: 48,
  openFiles: 256,
  cpuPercent: 100,
  volumeMb: 16,
});

/**
 * The probe agent: GET / → {agent: "probe", port}; POST /sh runs the body
 * with /bin/sh inside the sandbox → {code, stdout, stderr}; GET /exit?code=N
 * exits; GET /hog allocates 16 MiB every 50 ms until something stops it.
 */
const PROBE_AGENT = `import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
const port = Number(process.env.PORT);
const hog = [];
const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://probe.invalid');
  const send = (body) => res.end(JSON.stringify(body));
  if (url.pathname === '/sh') {
    let script = '';
    req.on('data', (chunk) => { script += chunk; });
    req.on('end', () => {
      execFile('/bin/sh', ['-c', script], { timeout: 20000, maxBuffer: 8 << 20 }, (error, stdout, stderr) => {
        send({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr });
      });
    });
    return;
  }
  if (url.pathname === '/exit') {
    send({ exiting: true });
    setTimeout(() => process.exit(Number(url.searchParams.get('code') ?? 0)), 10);
    return;
  }
  if (url.pathname === '/hog') {
    send({ hogging: true });
    setInterval(() => { const b = Buffer.alloc(16 << 20); b.fill(1); hog.push(b); }, 50);
    return;
  }
  send({ agent: 'probe', port, uid: process.getuid() });
});
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
`;

/** Writes the probe agents into a fresh template directory (mode 0755: an unprivileged host uid must read it). */
export async function writeProbeTemplates(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-templates-'));
  await chmod(dir, 0o755);
  const files: Record<string, string> = {
    'probe.mjs': PROBE_AGENT,
    'exit-at-once.mjs': 'process.exit(3);\n',
    'never-listens.mjs': 'setInterval(() => {}, 1000);\n',
  };
  for (const [name, text] of Object.entries(files))
    await writeFile(path.join(dir, name), text, { mode: 0o644 });
  return dir;
}

/** An info-level logger whose lines (JSON) land in `lines`, for tests to read. */
export function linesLogger(lines: string[]): Logger {
  return createLogger(
    'info',
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(chunk.toString('utf8'));
        done();
      },
    }),
  );
}

export interface Runtime {
  readonly db: TestDatabase;
  readonly driver: RuntimeDriver;
  /** The temporary data directory (mode 0711, like an operator's), with instances/ below it. */
  readonly dataDir: string;
  readonly instancesDir: string;
  readonly templatesDir: string;
  readonly logLines: string[];
  /** Every exit the driver reported, in order, and as 'exit' events. */
  readonly exits: InstanceExit[];
  readonly exitEvents: EventEmitter;
  tenant(name: string): Promise<string>;
  agent(tenantId: string): Promise<string>;
  /** A driver over the same directories with its own start timeout, or its own limit options. */
  driverWith(startTimeoutMs: number | undefined, limits?: DriverLimitOptions): RuntimeDriver;
  close(): Promise<void>;
}

export interface DriverLimitOptions {
  readonly unenforcedLimits?: readonly UnenforcedLimit[];
  /** false: a driver that uses no cgroup, as on a host without writable ones. */
  readonly cgroups?: boolean;
  /** false: a driver without the native launcher and starter, as on a host without a C compiler. */
  readonly native?: boolean;
}

export async function createRuntime(
  options: { startTimeoutMs?: number; allow?: string[] } & DriverLimitOptions = {},
): Promise<Runtime> {
  const db = await createTestDatabase();
  const dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-data-'));
  await chmod(dataDir, 0o711);
  const instancesDir = path.join(dataDir, 'instances');
  await mkdir(instancesDir, { mode: 0o711 });
  const templatesDir = await writeProbeTemplates();
  const logLines: string[] = [];
  const logger = linesLogger(logLines);
  const egress = createEgressProxy({ sql: db.app, logger, allow: options.allow ?? [] });
  const exits: InstanceExit[] = [];
  const exitEvents = new EventEmitter();
  const drivers: RuntimeDriver[] = [];
  const make = (startTimeoutMs: number | undefined, limits: DriverLimitOptions) => {
    const driver = createBwrapDriver({
      instancesDir,
      egress,
      logger,
      ...(startTimeoutMs === undefined ? {} : { startTimeoutMs }),
      ...(limits.unenforcedLimits === undefined ? {} : { unenforcedLimits: limits.unenforcedLimits }),
      ...(limits.cgroups === undefined ? {} : { cgroups: limits.cgroups }),
      ...(limits.native === undefined ? {} : { native: limits.native }),
    });
    driver.onExit((exit) => {
      exits.push(exit);
      exitEvents.emit('exit', exit);
    });
    drivers.push(driver);
    return driver;
  };
  const driver = make(options.startTimeoutMs, options);
  return {
    db,
    driver,
    dataDir,
    instancesDir,
    templatesDir,
    logLines,
    exits,
    exitEvents,
    tenant: (name) => createTenant(db, name),
    agent: (tenantId) => insertAgent(db.app, tenantId, 'rt'),
    driverWith: (startTimeoutMs, limits = {}) => make(startTimeoutMs, limits),
    async close() {
      await Promise.all(drivers.map((each) => each.stopAll()));
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
      await rm(templatesDir, { recursive: true, force: true });
    },
  };
}

export function probeSpec(
  runtime: Runtime,
  ids: { tenantId: string; agentId: string },
  overrides: Partial<InstanceSpec> = {},
): InstanceSpec {
  return {
    agentId: ids.agentId,
    tenantId: ids.tenantId,
    command: ['node', 'probe.mjs'],
    templateDir: runtime.templatesDir,
    port: 8080,
    limits: SMALL_LIMITS,
    egress: { tenantId: ids.tenantId, agentId: ids.agentId, allowlist: undefined },
    modelGateway: false,
    env: {},
    secrets: new Map(),
    supportKey: undefined,
    ...overrides,
  };
}

/** The instance's host directory (host-sockets.ts): the host's sockets, out of the sandbox's reach. */
export function hostDir(runtime: Runtime, agentId: string): string {
  return path.join(runtime.instancesDir, agentId, 'host');
}

/** An HTTP request to the agent through its ingress socket, as the platform's ingress makes it. */
export function ingressRequest(
  runtime: Runtime,
  agentId: string,
  request: { method?: string; path?: string; body?: string } = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(
      {
        socketPath: path.join(hostDir(runtime, agentId), 'ingress.sock'),
        method: request.method ?? 'GET',
        path: request.path ?? '/',
        headers: { host: 'agent.localhost' },
      },
      (response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => {
          body += chunk.toString('utf8');
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      },
    );
    outgoing.once('error', reject);
    outgoing.end(request.body);
  });
}

export interface ShellResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a shell script inside a probe agent's sandbox, as the agent. */
export async function shell(runtime: Runtime, agentId: string, script: string): Promise<ShellResult> {
  const response = await ingressRequest(runtime, agentId, { method: 'POST', path: '/sh', body: script });
  assert.equal(response.status, 200, response.body);
  return JSON.parse(response.body) as ShellResult;
}

/** Resolves with the next exit the driver reports for this agent (call it before causing the exit). */
export function nextExit(runtime: Runtime, agentId: string): Promise<InstanceExit> {
  return new Promise((resolve) => {
    const listener = (exit: InstanceExit) => {
      if (exit.agentId !== agentId) return;
      runtime.exitEvents.off('exit', listener);
      resolve(exit);
    };
    runtime.exitEvents.on('exit', listener);
  });
}

/**
 * Host pids of processes that belong to sandboxes under `marker` (a data
 * directory): the launcher and bwrap name it in their argv, everything inside
 * has it in its mount table.
 */
export async function sandboxProcesses(marker: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(marker)) {
      found.push(Number(entry));
      continue;
    }
    const mounts = await readFile(`/proc/${entry}/mountinfo`, 'utf8').catch(() => '');
    if (mounts.includes(marker)) found.push(Number(entry));
  }
  return found;
}
