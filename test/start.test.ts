import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { freePort } from '../src/free-port.ts';

// The newcomer's experience, end to end: `enclave start` with no DATABASE_URL
// and nothing else set, on a real embedded PostgreSQL in a fresh data dir.
// Start, answer health checks, stop on a signal without leaving a postgres
// behind, start again on the same data, survive `kill -9`, and share the
// cluster with an `enclave doctor` run beside it.

const ROOT = path.join(import.meta.dirname, '..');
const BIN = path.join(ROOT, 'bin', 'enclave.js');
// A safety net, not a timing expectation: a first start (initdb, migrations)
// on a loaded 2-core machine has taken over 60 s. Tests wait for the events.
const START_BOUND_MS = 300_000;
// Ctrl-C used to leave postgres running about one run in three; 20 runs in a row
// in a row are a check by hand; the suite repeats a few.
const CTRL_C_RUNS = 4;
// How much of the server's output a failure shows: enough to see what it was doing.
const OUTPUT_TAIL_LINES = 40;

let dataDir: string;
const started = new Set<ChildProcess>();
/** Process groups of `npm start` runs still going (a failed test may leave one). */
const groups = new Set<number>();

interface Running {
  readonly child: ChildProcess;
  readonly url: string;
  readonly lines: string[];
  readonly stderr: () => string;
  /** The postgres server's pid, from postmaster.pid while it runs. */
  readonly postgresPid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function cleanEnv(extra: Record<string, string>): Record<string, string> {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', ENCLAVE_DATA_DIR: dataDir, ...extra };
}

async function postmasterPid(): Promise<number> {
  const first = (await readFile(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8')).split('\n')[0];
  const pid = Number(first);
  assert.ok(Number.isInteger(pid) && pid > 0, `postmaster.pid holds a pid (got "${first}")`);
  return pid;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    assert.equal((error as NodeJS.ErrnoException).code, 'ESRCH');
    return false;
  }
  // An orphan that exited but that PID 1 has not reaped (some containers never do) is gone too.
  if (process.platform !== 'linux') return true;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
  } catch {
    return false; // exited between the two looks
  }
}

/** Spawns `enclave start` and resolves once it prints its URL. */
async function startEnclave(): Promise<Running> {
  const port = await freePort();
  const child = spawn(process.execPath, [BIN, 'start'], {
    cwd: ROOT,
    env: cleanEnv({ ENCLAVE_PORT: String(port) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  started.add(child);
  const exited = once(child, 'exit').then(([code, signal]) => {
    started.delete(child);
    return { code: code as number | null, signal: signal as NodeJS.Signals | null };
  });
  const lines: string[] = [];
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const ready = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      lines.push(line);
      const match = /^Enclave is running at (\S+) /.exec(line);
      if (match?.[1] !== undefined) resolve(match[1]);
    });
    void exited.then(({ code, signal }) =>
      reject(
        new Error(
          `enclave start exited (${signal ?? code}) before it was ready${outputSoFar(lines, stderr)}`,
        ),
      ),
    );
  });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `enclave start printed no URL within ${START_BOUND_MS / 1000} s${outputSoFar(lines, stderr)}`,
          ),
        ),
      START_BOUND_MS,
    );
  });
  try {
    const url = await Promise.race([ready, timeout]);
    assert.equal(url, `http://127.0.0.1:${port}`);
    return { child, url, lines, stderr: () => stderr, postgresPid: await postmasterPid(), exited };
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** What the server was doing: the tail of its output, for a failure message. */
function outputSoFar(stdout: readonly string[], stderr: string): string {
  const tail = (text: string): string => text.split('\n').slice(-OUTPUT_TAIL_LINES).join('\n').trim();
  return `\n--- its stdout so far ---\n${tail(stdout.join('\n')) || '(none)'}\n--- its stderr so far ---\n${tail(stderr) || '(none)'}`;
}

/** Polls /healthz until it answers 200: the moment a user (or a script) sees the server up. */
async function healthy(url: string, exited: Promise<unknown>, output: () => string): Promise<void> {
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  const deadline = Date.now() + START_BOUND_MS;
  for (;;) {
    if ((await status(`${url}/healthz`).catch(() => 0)) === 200) return;
    if (gone) throw new Error(`npm start exited before /healthz answered${output()}`);
    if (Date.now() > deadline)
      throw new Error(`/healthz did not answer within ${START_BOUND_MS / 1000} s${output()}`);
    // Polled tightly: Ctrl-C right after the first answer is the moment that used to leave postgres behind.
    await delay(20);
  }
}

/**
 * `npm start` in its own process group, as a shell runs a foreground job,
 * stopped the way a terminal's Ctrl-C stops it: SIGINT to the whole group.
 */
async function ctrlCThroughNpm(run: number): Promise<void> {
  const port = await freePort();
  const npm = spawn('npm', ['start'], {
    cwd: ROOT,
    env: cleanEnv({ ENCLAVE_PORT: String(port) }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const group = npm.pid;
  assert.ok(group !== undefined, 'npm started');
  groups.add(group);
  const stdout: string[] = [];
  let stderr = '';
  createInterface({ input: npm.stdout }).on('line', (line) => stdout.push(line));
  npm.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const output = (): string => `\n(run ${run})${outputSoFar(stdout, stderr)}`;
  const exited = once(npm, 'exit');
  // 'close' comes once every process holding npm's stdout and stderr has exited: npm, its shell, Enclave.
  const closed = once(npm, 'close');
  await healthy(`http://127.0.0.1:${port}`, exited, output);
  const postgres = await postmasterPid();
  process.kill(-group, 'SIGINT');
  const [code] = await exited;
  groups.delete(group);
  assert.ok(stdout.includes('Enclave stopped.'), `npm exits only after Enclave has stopped${output()}`);
  assert.equal(code, 0, `npm start exits 0 on Ctrl-C${output()}`);
  assertNoPostgres(postgres);
  await closed;
}

function status(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    // agent: false closes the connection afterwards, so no keep-alive socket delays the stop.
    get(url, { agent: false }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    }).on('error', reject);
  });
}

async function stopWith(running: Running, signal: NodeJS.Signals): Promise<void> {
  running.child.kill(signal);
  const { code } = await running.exited;
  assert.equal(code, 0, `enclave exits 0 on ${signal}; stderr:\n${running.stderr()}`);
  assert.ok(running.lines.includes('Enclave stopped.'), 'prints "Enclave stopped."');
  assertNoPostgres(running.postgresPid);
}

function assertNoPostgres(pid: number): void {
  assert.equal(alive(pid), false, `postgres (pid ${pid}) is gone`);
  assert.equal(existsSync(path.join(dataDir, 'pg', 'postmaster.pid')), false, 'postmaster.pid is removed');
}

async function secretFiles(): Promise<Record<string, string>> {
  const dir = path.join(dataDir, 'secrets');
  const files: Record<string, string> = {};
  for (const name of (await readdir(dir)).sort()) files[name] = await readFile(path.join(dir, name), 'utf8');
  return files;
}

async function pgVersionMtime(): Promise<number> {
  return (await stat(path.join(dataDir, 'pg', 'PG_VERSION'))).mtimeMs;
}

before(async () => {
  dataDir = await mkdtemp(path.join(tmpdir(), 'enclave-start-'));
});

after(async () => {
  // A failed test may leave an Enclave or its postgres running: stop both by pid.
  for (const child of started) child.kill('SIGKILL');
  for (const group of groups) process.kill(-group, 'SIGKILL');
  const pid = await postmasterPid().catch(() => undefined);
  if (pid !== undefined && alive(pid)) process.kill(pid, 'SIGQUIT');
  await rm(dataDir, { recursive: true, force: true });
});

describe('enclave start with the embedded database', { timeout: 8 * START_BOUND_MS }, () => {
  let secrets: Record<string, string>;
  let pgVersion: number;
  let killed: Running | undefined;

  test('a first start on an empty data dir migrates, serves /healthz and /readyz, and stops on SIGINT with no postgres left', async () => {
    const running = await startEnclave();
    assert.ok(
      running.lines.some((line) => line.includes('migrations applied')),
      'the first start applies the migrations',
    );
    assert.equal(await status(`${running.url}/healthz`), 200);
    assert.equal(await status(`${running.url}/readyz`), 200);
    assert.equal(alive(running.postgresPid), true);
    secrets = await secretFiles();
    assert.deepEqual(Object.keys(secrets), [
      'checkpoint_key.pem',
      'db_app_password',
      'db_owner_password',
      'master-keys',
      'pg_superuser_password',
      'relay_signing_key.pem',
      'session_key',
      'support_ssh_key',
    ]);
    pgVersion = await pgVersionMtime();
    await stopWith(running, 'SIGINT');
    // An empty installation prints the first operator's one-time invite link.
    assert.ok(
      running.lines.some((line) => line.startsWith('No operator yet.')),
      running.lines.join('\n'),
    );
    assert.ok(
      running.lines.some((line) => line.startsWith(`  ${running.url}/signup?invite=enc_inv_`)),
      running.lines.join('\n'),
    );
  });

  test('a second start reuses the data dir; enclave doctor beside it attaches to its cluster', async () => {
    const running = await startEnclave();
    assert.equal(await status(`${running.url}/readyz`), 200);
    assert.equal(
      running.lines.some((line) => line.includes('migrations applied')),
      false,
      'nothing left to migrate',
    );
    assert.equal(await pgVersionMtime(), pgVersion, 'initdb did not run again');
    assert.deepEqual(await secretFiles(), secrets, 'the generated secrets are reused');

    const doctor = spawn(process.execPath, [BIN, 'doctor'], { cwd: ROOT, env: cleanEnv({}) });
    let output = '';
    doctor.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    const [code] = await once(doctor, 'exit');
    assert.equal(code, 0, output);
    assert.match(output, /^ok {4}database +PostgreSQL .* \(embedded\)/m);
    assert.match(output, /^ok {4}migrations /m);
    assert.equal(await postmasterPid(), running.postgresPid, 'doctor used the running cluster');
    assert.equal(await status(`${running.url}/healthz`), 200, 'the server keeps running after doctor');
    assert.equal(await status(`${running.url}/readyz`), 200);

    running.child.kill('SIGKILL');
    await running.exited;
    assert.equal(alive(running.postgresPid), true, 'kill -9 of Enclave leaves its postgres running');
    killed = running;
  });

  test('after kill -9, the next start stops the orphaned postgres, starts its own, and stops on SIGTERM', async () => {
    assert.ok(killed !== undefined, 'needs the kill -9 of the previous test');
    const running = await startEnclave();
    assert.equal(alive(killed.postgresPid), false, 'the orphaned postgres was stopped');
    assert.notEqual(running.postgresPid, killed.postgresPid);
    assert.equal(await status(`${running.url}/healthz`), 200);
    assert.equal(await status(`${running.url}/readyz`), 200);
    await stopWith(running, 'SIGTERM');
  });

  test('Ctrl-C on npm start right after /healthz answers stops Enclave and its postgres before npm exits, run after run', async () => {
    for (let run = 1; run <= CTRL_C_RUNS; run++) await ctrlCThroughNpm(run);
  });
});
