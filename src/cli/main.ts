import { parseArgs } from 'node:util';
import { ConfigError, type Env, loadConfig } from '../config.ts';
import { openDatabase } from '../db/database.ts';
import { isAppError } from '../errors.ts';
import { startEnclave } from '../main.ts';
import { AUDIT_HELP, runAudit } from './audit.ts';
import { runDoctor } from './doctor.ts';
import { INVITE_HELP, runInvite } from './invite.ts';
import { KEYS_HELP, runKeys } from './keys.ts';
import { runSupport, SUPPORT_HELP } from './support.ts';
import { UsageError } from './usage-error.ts';

// The `enclave` admin command. Every command works against the same database
// as a running `npm start`: the same ENCLAVE_DATA_DIR (the embedded cluster is
// shared while that server runs) or the same DATABASE_URL.

const USAGE = `Usage: enclave <command> [options]

Commands:
  start     Start the server and the job worker (migrates first)
  worker    Start only the job worker, for scale-out (migrates first)
  migrate   Apply pending database migrations and exit
  doctor    Check configuration, database, migrations and host tools
  invite    Create, list or revoke signup invites (invite create --email ADDRESS)
  audit     Make an audit checkpoint now, or export a tenant's recovery bundle
  keys      Rotate the vault's master key or a tenant's data key
  support   Open a support shell in an agent that allows it (ssh, or proxy for OpenSSH)
  help      Show this help

Run "enclave <command> --help" for a command's options.
Configuration comes from ENCLAVE_* environment variables; see README.md.`;

const COMMAND_HELP: Readonly<Record<string, string>> = {
  start: `Usage: enclave start

Starts the HTTP server and the job worker. With DATABASE_URL unset, an
embedded PostgreSQL runs under ENCLAVE_DATA_DIR. Migrations run first.
Stops cleanly on SIGINT or SIGTERM.`,
  worker: `Usage: enclave worker

Starts only the job worker (graphile-worker), to run more workers beside
the servers. Migrations run first. Stops cleanly on SIGINT or SIGTERM.`,
  migrate: `Usage: enclave migrate

Applies pending migrations (src/db/migrations) and the job queue's schema,
prints what it applied, and exits. Safe to run while servers are running.`,
  doctor: `Usage: enclave doctor

Checks the configuration, the database connection, pending migrations, the
database roles, row-level security coverage, the worker's heartbeat, that
the master key opens this database's data keys, and whether bubblewrap and
Chromium are installed. Prints a fix for each problem
and exits non-zero if anything Enclave needs to run is broken.`,
  invite: INVITE_HELP,
  audit: AUDIT_HELP,
  keys: KEYS_HELP,
  support: SUPPORT_HELP,
  help: 'Usage: enclave help [command]',
};

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function describeError(error: unknown): string {
  if (error instanceof ConfigError) return error.message;
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return 'the port is already in use; stop the other process or set ENCLAVE_PORT';
  if (code === 'EACCES') return `permission denied: ${(error as Error).message}`;
  if (isAppError(error)) return error.message;
  return `unexpected error: ${(error as Error).message ?? String(error)}`;
}

async function runUntilSignal(env: Env, io: Io, server: boolean): Promise<number> {
  const enclave = await startEnclave({ env, cwd: process.cwd(), server, worker: true, print: io.out });
  let stopping = false;
  const stopped = new Promise<number>((resolve) => {
    const stop = (reason: string, code: number): void => {
      if (stopping) return;
      stopping = true;
      enclave.logger.info({ reason }, 'stopping');
      enclave.stop().then(
        () => resolve(code),
        (error: unknown) => {
          io.err(`enclave: stop failed: ${describeError(error)}`);
          resolve(1);
        },
      );
    };
    // Kept for the whole stop: a terminal's Ctrl-C reaches both npm and us, and
    // npm forwards it again; a second signal must not kill us mid-shutdown.
    process.on('SIGINT', () => stop('SIGINT', 0));
    process.on('SIGTERM', () => stop('SIGTERM', 0));
    enclave.workerDone.then(
      () => stop('worker stopped', stopping ? 0 : 1),
      (error: unknown) => {
        io.err(`enclave: the job worker failed: ${describeError(error)}`);
        stop('worker failed', 1);
      },
    );
  });
  const code = await stopped;
  io.out('Enclave stopped.');
  return code;
}

async function migrateOnly(env: Env, io: Io): Promise<number> {
  const config = loadConfig(env, process.cwd());
  const db = await openDatabase(config, env, { appPoolSize: 1 });
  try {
    if (db.migrated.applied.length === 0) io.out('Database is up to date.');
    for (const name of db.migrated.applied) io.out(`applied ${name}`);
  } finally {
    await db.close();
  }
  return 0;
}

interface Parsed {
  readonly command: string | undefined;
  readonly help: boolean;
  readonly rest: string[];
  /** Options of `invite create`; any other command refuses them. */
  readonly email: string | undefined;
  readonly expires: string | undefined;
  /** Options of `audit export`. */
  readonly tenant: string | undefined;
  readonly bundle: string | undefined;
  readonly consistencyFrom: string | undefined;
}

function parse(argv: readonly string[]): Parsed {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      help: { type: 'boolean', short: 'h' },
      email: { type: 'string' },
      expires: { type: 'string' },
      tenant: { type: 'string' },
      bundle: { type: 'string' },
      'consistency-from': { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  const [command, ...rest] = positionals;
  return {
    command,
    help: values.help === true,
    rest,
    email: values.email,
    expires: values.expires,
    tenant: values.tenant,
    bundle: values.bundle,
    consistencyFrom: values['consistency-from'],
  };
}

export async function main(argv: readonly string[], env: Env, io: Io = processIo): Promise<number> {
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    // parseArgs appends advice about "--" to its first sentence; the first sentence is the problem.
    const problem = (error as Error).message.split(/\n|\. /)[0] ?? 'bad arguments';
    io.err(`enclave: ${problem.charAt(0).toLowerCase()}${problem.slice(1)}. Run "enclave --help".`);
    return 2;
  }
  const { command, help, rest, email, expires, tenant, bundle, consistencyFrom } = parsed;
  try {
    if (command === undefined || command === 'help') {
      const topic = command === 'help' ? rest[0] : undefined;
      if (topic !== undefined && COMMAND_HELP[topic] === undefined)
        throw new UsageError(`unknown command "${topic}"`);
      io.out(topic === undefined ? USAGE : (COMMAND_HELP[topic] ?? USAGE));
      return command === undefined && !help ? 2 : 0;
    }
    const commandHelp = COMMAND_HELP[command];
    if (commandHelp === undefined) throw new UsageError(`unknown command "${command}"`);
    if (help) {
      io.out(commandHelp);
      return 0;
    }
    if (command === 'audit' && email === undefined && expires === undefined) {
      return await runAudit({ rest, tenant, bundle, consistencyFrom }, env, io);
    }
    if (tenant !== undefined || bundle !== undefined || consistencyFrom !== undefined) {
      throw new UsageError(
        `--tenant, --bundle and --consistency-from are options of "audit export", not "${command}"`,
      );
    }
    if (command === 'invite') return await runInvite({ rest, email, expires }, env, io);
    if (command === 'support' && email === undefined && expires === undefined)
      return await runSupport(rest, env, io);
    if (command === 'keys' && email === undefined && expires === undefined)
      return await runKeys(rest, env, io);
    if (email !== undefined || expires !== undefined) {
      throw new UsageError(`--email and --expires are options of "invite create", not "${command}"`);
    }
    if (rest.length > 0) throw new UsageError(`"${command}" takes no arguments (got "${rest[0]}")`);
    switch (command) {
      case 'start':
        return await runUntilSignal(env, io, true);
      case 'worker':
        return await runUntilSignal(env, io, false);
      case 'migrate':
        return await migrateOnly(env, io);
      case 'doctor':
        return await runDoctor(env, io);
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } catch (error) {
    if (error instanceof UsageError) {
      io.err(`enclave: ${error.message}. Run "enclave --help".`);
      return 2;
    }
    io.err(`enclave: ${describeError(error)}`);
    return 1;
  }
}
