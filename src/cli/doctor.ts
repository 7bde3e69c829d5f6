import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { type HostLimitSupport, hostLimitSupport } from '../agents/runtime/limits.ts';
import { loadSeccompProgram } from '../agents/runtime/seccomp/seccomp.ts';
import { type Config, type Env, loadConfig } from '../config.ts';
import { type Database, openDatabase } from '../db/database.ts';
import { pendingMigrations } from '../db/migrator.ts';
import { findUnprotectedTables } from '../db/rls-gate.ts';
import { assertRolesSafe } from '../db/roles.ts';
import { isAppError } from '../errors.ts';
import { createVault, loadMasterKeyProvider } from '../vault/service.ts';
import type { Io } from './main.ts';

// `enclave doctor`: each check prints ok, warn or fail with a fix. Only a
// fail (something Enclave needs to run now) makes the exit status non-zero.

type Status = 'ok' | 'warn' | 'fail';

export interface Check {
  readonly name: string;
  readonly status: Status;
  readonly detail: string;
  readonly fix?: string;
}

const execFileAsync = promisify(execFile);

/**
 * Which per-instance limits (AGT-6) this host enforces, measured by
 * hostLimitSupport(), and which of those it cannot would make instances
 * refuse to start (those not named in ENCLAVE_UNENFORCED_LIMITS).
 */
export async function sandboxLimitsCheck(
  config: Pick<Config, 'instancesDir' | 'unenforcedLimits'>,
): Promise<Check> {
  return sandboxLimitsLine(await hostLimitSupport(config.instancesDir), config);
}

/**
 * The doctor's line for a measured host. It is `ok` only when nothing in it is
 * a problem, and a problem leads the line: `how` also names what works, and an
 * error buried in it behind `ok` read as fine.
 */
export function sandboxLimitsLine(
  support: HostLimitSupport,
  config: Pick<Config, 'unenforcedLimits'>,
): Check {
  const name = 'sandbox limits';
  if (!support.sandbox.ok) {
    return {
      name,
      status: 'warn',
      detail: `instances cannot start here: ${support.sandbox.reason}`,
      fix: 'install bubblewrap and util-linux (setpriv, unshare, prlimit), allow unprivileged user namespaces, and let the worker reach ENCLAVE_DATA_DIR/instances',
    };
  }
  const unenforced = (['cpu', 'processes', 'volume'] as const).filter((limit) => !support[limit]);
  const refused = unenforced.filter((limit) => !config.unenforcedLimits.includes(limit));
  const allowed = unenforced.filter((limit) => config.unenforcedLimits.includes(limit));
  const problems = [
    ...(refused.length > 0 ? [`instances refuse to start: ${refused.join(', ')} cannot be enforced`] : []),
    ...(support.uidConflicts.length > 0
      ? [`the instances' host uids are also claimed by ${support.uidConflicts.join(', ')}`]
      : []),
    ...(support.openFiles ? [] : ['open files not enforced']),
    ...(support.memory ? [] : ['memory measured, not a hard limit']),
    ...(support.seccomp ? [] : ['no seccomp filter']),
    ...(allowed.length > 0
      ? [`not enforced, allowed by ENCLAVE_UNENFORCED_LIMITS: ${allowed.join(', ')}`]
      : []),
  ];
  const fixes = [
    ...(refused.length > 0
      ? [
          `run Enclave as root where cgroup v2 (or v1 memory, pids and cpu) is writable and loop devices exist, or accept the gap with ENCLAVE_UNENFORCED_LIMITS=${refused.join(',')}`,
        ]
      : []),
    ...(support.uidConflicts.length > 0
      ? ['leave uids 1577058304 to 1593835519 to Enclave: no user or /etc/subuid range there']
      : []),
  ];
  const summary = [
    ...(unenforced.length === 0 ? ['cpu, processes and volume enforced'] : []),
    `memory ${support.memory ? 'hard' : 'measured'}`,
  ].join('; ');
  return {
    name,
    status: problems.length === 0 ? 'ok' : 'warn',
    detail: `${problems.length === 0 ? summary : `${problems.join('; ')}; ${summary}`} (${support.how})`,
    ...(fixes.length > 0 ? { fix: fixes.join('; and ') } : {}),
  };
}

/** Whether every sandbox runs under the seccomp filter (AGT-2), and what instances do without one. */
async function seccompCheck(config: Pick<Config, 'unenforcedLimits'>): Promise<Check> {
  // The same program the driver's host detection loads (built once per process).
  const program = await loadSeccompProgram();
  const allowed = config.unenforcedLimits.includes('seccomp');
  return program.ok
    ? {
        name: 'seccomp',
        status: 'ok',
        detail: `active: every sandbox is denied ${program.denied.length} syscalls (io_uring, keyctl, bpf, mount, unshare, ptrace …)`,
      }
    : {
        name: 'seccomp',
        status: 'warn',
        detail: `not active (${program.reason}): instances ${allowed ? 'run without a filter' : 'refuse to start'}`,
        fix: 'apt-get install python3-seccomp (or set ENCLAVE_UNENFORCED_LIMITS=seccomp to run without a filter)',
      };
}

/** The vault's master key: configured, well-formed, and the key this database's data keys are wrapped with. */
async function masterKeyCheck(config: Config, env: Env, db: Database): Promise<Check> {
  try {
    const vault = createVault({ provider: await loadMasterKeyProvider(config, env) });
    const versions = await vault.verifyMasterKeys(db.app);
    return {
      name: 'master key',
      status: 'ok',
      detail:
        versions.length === 0
          ? 'well-formed; the first start registers it'
          : `opens the data keys of this database (version ${versions.join(', ')})`,
    };
  } catch (error) {
    if ((error as { code?: string }).code === '42P01') {
      return {
        name: 'master key',
        status: 'warn',
        detail: 'not checked: the vault tables are not migrated yet',
      };
    }
    return {
      name: 'master key',
      status: 'fail',
      detail: isAppError(error) ? error.message : `unexpected error: ${(error as Error).message}`,
      fix: 'give ENCLAVE_MASTER_KEY or ENCLAVE_MASTER_KEY_FILE the key this database was set up with (see README.md, "Credential vault")',
    };
  }
}

async function toolVersion(command: string, args: string[]): Promise<string | undefined> {
  try {
    const { stdout } = await execFileAsync(command, args, { timeout: 10_000 });
    return stdout.trim().split('\n')[0];
  } catch {
    return undefined;
  }
}

async function hostChecks(): Promise<Check[]> {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  const nodeOk = major > 22 || (major === 22 && minor >= 18);
  const [bwrap, chromium] = await Promise.all([
    toolVersion('bwrap', ['--version']),
    toolVersion('chromium', ['--version']),
  ]);
  return [
    {
      name: 'node',
      status: nodeOk ? 'ok' : 'fail',
      detail: process.version,
      ...(nodeOk ? {} : { fix: 'install Node.js 22.18 or newer (24 LTS recommended)' }),
    },
    bwrap === undefined
      ? {
          name: 'bubblewrap',
          status: 'warn',
          detail: 'bwrap not found: agent instances cannot be sandboxed on this host',
          fix: 'apt-get install bubblewrap',
        }
      : { name: 'bubblewrap', status: 'ok', detail: bwrap },
    chromium === undefined
      ? {
          name: 'chromium',
          status: 'warn',
          detail: 'chromium not found: browser tests cannot run on this host',
          fix: 'apt-get install chromium',
        }
      : { name: 'chromium', status: 'ok', detail: chromium },
  ];
}

async function databaseChecks(db: Database): Promise<Check[]> {
  const checks: Check[] = [];
  const [server] = await db.app<{ version: string }[]>`select current_setting('server_version') as version`;
  const where = db.embedded === undefined ? 'external' : 'embedded';
  checks.push({
    name: 'database',
    status: 'ok',
    detail: `PostgreSQL ${server?.version} (${where}), reached as enclave_app`,
  });

  const pending = await pendingMigrations(db.app, db.migrations);
  checks.push(
    pending.length === 0
      ? {
          name: 'migrations',
          status: 'ok',
          detail: `schema at version ${db.migrations.at(-1)?.version ?? 0}`,
        }
      : {
          name: 'migrations',
          status: 'fail',
          detail: `${pending.length} pending (first: ${pending[0]})`,
          fix: 'run enclave migrate (or restart enclave start, which migrates)',
        },
  );

  try {
    await assertRolesSafe(db.app);
    checks.push({
      name: 'roles',
      status: 'ok',
      detail: 'enclave_owner and enclave_app: no SUPERUSER, no BYPASSRLS',
    });
  } catch (error) {
    checks.push({ name: 'roles', status: 'fail', detail: (error as Error).message });
  }

  const unprotected = await findUnprotectedTables(db.app);
  checks.push(
    unprotected.length === 0
      ? {
          name: 'row security',
          status: 'ok',
          detail: 'every table has FORCE RLS and a tenant policy, or is allowlisted',
        }
      : {
          name: 'row security',
          status: 'fail',
          detail: unprotected.map((t) => `${t.table} lacks ${t.missing.join(', ')}`).join('; '),
          fix: 'add the missing RLS in a migration, or list a truly global table in src/db/global-tables.ts',
        },
  );

  const [beat] = await db.app<
    { seen_at: Date | null }[]
  >`select max(seen_at) as seen_at from worker_heartbeats`;
  const fresh = beat?.seen_at != null && Date.now() - beat.seen_at.getTime() < 3 * 60_000;
  checks.push(
    fresh
      ? { name: 'worker', status: 'ok', detail: `last heartbeat ${beat?.seen_at?.toISOString()}` }
      : {
          name: 'worker',
          status: 'warn',
          detail: 'no worker heartbeat in the last 3 minutes: jobs (email, callbacks) are not running',
          fix: 'start enclave start, or enclave worker beside the servers',
        },
  );
  return checks;
}

function print(io: Io, checks: readonly Check[]): void {
  for (const check of checks) {
    io.out(`${check.status.padEnd(5)} ${check.name.padEnd(13)} ${check.detail}`);
    if (check.fix !== undefined) io.out(`${' '.repeat(19)}fix: ${check.fix}`);
  }
}

export async function runDoctor(env: Env, io: Io): Promise<number> {
  const checks: Check[] = [];
  let config: Config | undefined;
  try {
    config = loadConfig(env, process.cwd());
    checks.push({
      name: 'config',
      status: 'ok',
      detail: `${config.env}, ${config.publicUrl}, data dir ${config.dataDir}`,
    });
  } catch (error) {
    checks.push({
      name: 'config',
      status: 'fail',
      detail: (error as Error).message,
      fix: 'correct the variable',
    });
  }
  checks.push(...(await hostChecks()));
  if (config !== undefined) checks.push(await sandboxLimitsCheck(config), await seccompCheck(config));
  if (config !== undefined) {
    let db: Database | undefined;
    try {
      db = await openDatabase(config, env, { appPoolSize: 2, migrate: false });
      checks.push(...(await databaseChecks(db)));
      checks.push(await masterKeyCheck(config, env, db));
    } catch (error) {
      checks.push({
        name: 'database',
        status: 'fail',
        detail: isAppError(error) ? error.message : `unexpected error: ${(error as Error).message}`,
        fix:
          config.databaseUrl === undefined
            ? `check ${config.dataDir}/postgres.log`
            : 'check DATABASE_URL and that the server is reachable',
      });
    } finally {
      await db?.close();
    }
  }
  print(io, checks);
  return checks.some((check) => check.status === 'fail') ? 1 : 0;
}
