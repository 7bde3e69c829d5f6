import { parseArgs } from 'node:util';
import type { Env } from '../config.ts';
import { isAppError } from '../errors.ts';
import { COMMAND_HELP, USAGE } from './help.ts';
import { UsageError } from './usage-error.ts';

// The `enclave` admin command. Every command works against the same database
// as a running `npm start`: the same ENCLAVE_DATA_DIR (the embedded cluster is
// shared while that server runs) or the same DATABASE_URL.
//
// Command modules are imported when their command runs, not up front: loading
// them all (the database, the agent runtime, ssh2) took seconds, and help and
// argument errors should answer at once.

export interface Io {
  out(line: string): void;
  err(line: string): void;
}

const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

function describeError(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EADDRINUSE') return 'the port is already in use; stop the other process or set ENCLAVE_PORT';
  if (code === 'EACCES') return `permission denied: ${(error as Error).message}`;
  if (isAppError(error)) return error.message;
  return `unexpected error: ${(error as Error).message ?? String(error)}`;
}

async function runUntilSignal(env: Env, io: Io, server: boolean): Promise<number> {
  // The handlers come before start-up: /healthz answers before startEnclave
  // returns, and a Ctrl-C in between used to kill us by default and leave the
  // embedded postgres (in its own process group) running. A signal during
  // start-up stops Enclave as soon as it has started.
  let signalled: ((reason: string) => void) | undefined;
  let early: string | undefined;
  const onSignal = (reason: string): void => {
    if (signalled === undefined) early ??= reason;
    else signalled(reason);
  };
  // Kept for the whole stop: a terminal's Ctrl-C reaches both npm and us, and
  // npm forwards it again; a second signal must not kill us mid-shutdown.
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  const { startEnclave } = await import('../main.ts');
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
    signalled = (reason) => stop(reason, 0);
    if (early !== undefined) stop(early, 0);
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
  const [{ loadConfig }, { openDatabase }] = await Promise.all([
    import('../config.ts'),
    import('../db/database.ts'),
  ]);
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
  /** Option of `relay reject`. */
  readonly reason: string | undefined;
  /** Option of `backup` and `restore`. */
  readonly passphraseFile: string | undefined;
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
      reason: { type: 'string' },
      'passphrase-file': { type: 'string' },
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
    reason: values.reason,
    passphraseFile: values['passphrase-file'],
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
  const { command, help, rest, email, expires, tenant, bundle, consistencyFrom, reason, passphraseFile } =
    parsed;
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
    if (command === 'relay' && email === undefined && expires === undefined && tenant === undefined) {
      const { runRelay } = await import('./relay.ts');
      return await runRelay({ rest, reason }, env, io);
    }
    if (reason !== undefined)
      throw new UsageError(`--reason is an option of "relay reject", not "${command}"`);
    if (command === 'backup' || command === 'restore' || command === 'drill') {
      if (email !== undefined || expires !== undefined || tenant !== undefined || bundle !== undefined) {
        throw new UsageError(`"${command}" takes only --passphrase-file`);
      }
      const { runBackupCommand } = await import('./backup.ts');
      return await runBackupCommand({ command, rest, passphraseFile }, env, io);
    }
    if (passphraseFile !== undefined)
      throw new UsageError(`--passphrase-file is an option of "backup" and "restore", not "${command}"`);
    if (command === 'audit' && email === undefined && expires === undefined) {
      const { runAudit } = await import('./audit.ts');
      return await runAudit({ rest, tenant, bundle, consistencyFrom }, env, io);
    }
    if (tenant !== undefined || bundle !== undefined || consistencyFrom !== undefined) {
      throw new UsageError(
        `--tenant, --bundle and --consistency-from are options of "audit export", not "${command}"`,
      );
    }
    if (command === 'invite') {
      const { runInvite } = await import('./invite.ts');
      return await runInvite({ rest, email, expires }, env, io);
    }
    if (command === 'support' && email === undefined && expires === undefined) {
      const { runSupport } = await import('./support.ts');
      return await runSupport(rest, env, io);
    }
    if (command === 'keys' && email === undefined && expires === undefined) {
      const { runKeys } = await import('./keys.ts');
      return await runKeys(rest, env, io);
    }
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
      case 'doctor': {
        const { runDoctor } = await import('./doctor.ts');
        return await runDoctor(env, io);
      }
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
