import { spawn } from 'node:child_process';
import { access, constants, lstat, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import {
  HOST_ETC_CANDIDATES,
  type LaunchOptions,
  type MaskedEntry,
  PROC_MASK_CANDIDATES,
  probeArgv,
  type SandboxLayout,
  SYSTEM_CANDIDATES,
  type SystemEntry,
} from './bwrap-args.ts';
import { loadSeccompProgram, type SeccompProgram } from './seccomp/seccomp.ts';

// The host's side of the sandbox, found once: the tools (bwrap, prlimit,
// setpriv), what bubblewrap supports, the read-only binds and /proc masks
// every instance shares, the seccomp program, and a measurement of whether
// an instance can run under a host uid of its own rather than as
// capability-less root.

export interface SandboxTools {
  readonly shell: string;
  readonly bwrap: string;
  readonly prlimit: string | undefined;
  readonly setpriv: string | undefined;
}

export type SharedLayout = Pick<
  SandboxLayout,
  'nodeBinary' | 'supervisorDir' | 'nodeModulesDir' | 'systemEntries' | 'hostEtc' | 'procMasks'
>;

export interface SandboxHost {
  readonly tools: SandboxTools;
  /** bubblewrap ≥ 0.8's --disable-userns. */
  readonly disableUserns: boolean;
  readonly shared: SharedLayout;
  /** The seccomp program every sandbox loads, or why this host has none. */
  readonly seccomp: SeccompProgram;
  /** The driver runs as root: it can drop each instance to a host uid of its own. */
  readonly root: boolean;
}

const SYSTEM_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** An executable named `name` on PATH (then the system directories), or undefined. */
export async function findExecutable(name: string): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(':').filter((dir) => dir.startsWith('/')), ...SYSTEM_PATH];
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    const ok = await access(candidate, constants.X_OK).then(
      () => true,
      () => false,
    );
    if (ok) return candidate;
  }
  return undefined;
}

function run(command: string, args: readonly string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer) => {
      if (output.length < 64 * 1024) output += chunk.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.once('error', () => resolve({ code: null, output }));
    child.once('close', (code) => resolve({ code, output }));
  });
}

/** The nearest node_modules above `from` that holds ssh2 (the supervisor's one import). */
async function findNodeModules(from: string): Promise<string> {
  let dir = from;
  for (;;) {
    const candidate = path.join(dir, 'node_modules');
    const ok = await access(path.join(candidate, 'ssh2', 'package.json')).then(
      () => true,
      () => false,
    );
    if (ok) return realpath(candidate);
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('node_modules with ssh2 not found above the runtime directory');
    dir = parent;
  }
}

async function systemEntries(): Promise<SystemEntry[]> {
  const entries: SystemEntry[] = [];
  for (const entry of SYSTEM_CANDIDATES) {
    const stat = await lstat(entry).catch(() => undefined);
    if (stat === undefined) continue;
    if (stat.isSymbolicLink()) entries.push({ path: entry, kind: 'symlink', target: await readlink(entry) });
    else if (stat.isDirectory()) entries.push({ path: entry, kind: 'dir' });
  }
  return entries;
}

async function hostEtc(): Promise<string[]> {
  const found: string[] = [];
  for (const file of HOST_ETC_CANDIDATES) {
    if (
      await lstat(file).then(
        () => true,
        () => false,
      )
    )
      found.push(file);
  }
  return found;
}

/** The masked /proc entries this kernel has: a fresh procfs has the same global entries as the host's. */
async function procMasks(): Promise<MaskedEntry[]> {
  const found: MaskedEntry[] = [];
  for (const entry of PROC_MASK_CANDIDATES) {
    const stat = await lstat(entry).catch(() => undefined);
    if (stat !== undefined) found.push({ path: entry, kind: stat.isDirectory() ? 'dir' : 'file' });
  }
  return found;
}

/** Throws when bubblewrap is missing: the local driver cannot run without it. */
export async function detectSandboxHost(): Promise<SandboxHost> {
  const [bwrap, prlimit, setpriv] = await Promise.all([
    findExecutable('bwrap'),
    findExecutable('prlimit'),
    findExecutable('setpriv'),
  ]);
  if (bwrap === undefined) throw new Error('bubblewrap (bwrap) is not installed');
  const help = await run(bwrap, ['--help']);
  return {
    tools: { shell: '/bin/sh', bwrap, prlimit, setpriv },
    disableUserns: help.output.includes('--disable-userns'),
    shared: {
      nodeBinary: await realpath(process.execPath),
      supervisorDir: path.join(import.meta.dirname, 'supervisor'),
      nodeModulesDir: await findNodeModules(import.meta.dirname),
      systemEntries: await systemEntries(),
      hostEtc: await hostEtc(),
      procMasks: await procMasks(),
    },
    seccomp: await loadSeccompProgram(),
    root: process.getuid?.() === 0,
  };
}

export type HostUidProbe = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Sets the instance's sandbox up as `uid` and runs `true` in it: the
 * measurement behind dropping root. It fails when any bind source is not
 * readable by that uid (a node binary under /root, a data dir of mode 0700)
 * or unprivileged user namespaces are off.
 */
export async function probeHostUid(
  host: SandboxHost,
  bwrap: readonly string[],
  uid: number,
): Promise<HostUidProbe> {
  if (!host.root) return { ok: false, reason: 'the driver does not run as root' };
  if (host.tools.setpriv === undefined) return { ok: false, reason: 'setpriv (util-linux) is not installed' };
  const options: LaunchOptions = {
    shell: host.tools.shell,
    cgroupProcs: [],
    prlimit: undefined,
    setpriv: { binary: host.tools.setpriv, uid },
    bwrap: host.tools.bwrap,
  };
  const [command, ...args] = probeArgv(options, bwrap);
  const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
    // bwrap writes its info to fd 5 (INFO_FD): give it a pipe there.
    const child = spawn(command as string, args, {
      stdio: ['ignore', 'ignore', 'pipe', 'ignore', 'ignore', 'pipe'],
    });
    let output = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      if (output.length < 4096) output += chunk.toString('utf8');
    });
    (child.stdio[5 as number] as unknown as { resume(): void } | undefined)?.resume();
    child.once('error', (error) => resolve({ code: null, output: error.message }));
    child.once('close', (code) => resolve({ code, output }));
  });
  if (result.code === 0) return { ok: true };
  const line = result.output.trim().split('\n').at(-1) ?? '';
  return { ok: false, reason: line === '' ? `the probe exited with code ${result.code}` : line };
}
