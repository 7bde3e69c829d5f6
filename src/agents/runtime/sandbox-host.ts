import { access, constants, lstat, readFile, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import {
  HOST_ETC_CANDIDATES,
  HOST_UID_BASE,
  HOST_UID_SPAN,
  type MaskedEntry,
  PROC_MASK_CANDIDATES,
  type SandboxLayout,
  SYSTEM_CANDIDATES,
  type SystemEntry,
} from './bwrap-args.ts';
import { buildNative, type NativeBuild } from './native/build.ts';
import { runTool } from './run-tool.ts';
import { loadSeccompProgram, type SeccompProgram } from './seccomp/seccomp.ts';

// The host's side of the sandbox, found once: the tools (bwrap, prlimit,
// setpriv, unshare), what bubblewrap supports, the read-only binds and /proc
// masks every instance shares, the seccomp program and the native helpers.

export interface SandboxTools {
  readonly shell: string;
  readonly bwrap: string;
  readonly prlimit: string | undefined;
  readonly setpriv: string | undefined;
  readonly unshare: string | undefined;
}

export type SharedLayout = Pick<
  SandboxLayout,
  | 'nodeBinary'
  | 'starterBinary'
  | 'supervisorDir'
  | 'nodeModulesDir'
  | 'systemEntries'
  | 'hostEtc'
  | 'procMasks'
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
  /** The native launcher and starter (native/), built, or why there are none. */
  readonly native: NativeBuild;
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

/**
 * Throws when bubblewrap is missing: the local driver cannot run without it.
 * The native helpers are built into `nativeDir` when one is given.
 */
export async function detectSandboxHost(nativeDir?: string): Promise<SandboxHost> {
  const [bwrap, prlimit, setpriv, unshare, cc] = await Promise.all([
    findExecutable('bwrap'),
    findExecutable('prlimit'),
    findExecutable('setpriv'),
    findExecutable('unshare'),
    findExecutable('cc'),
  ]);
  if (bwrap === undefined) throw new Error('bubblewrap (bwrap) is not installed');
  const [help, native] = await Promise.all([
    runTool(bwrap, ['--help']),
    nativeDir === undefined
      ? ({ ok: false, reason: 'not built for this check' } as const)
      : buildNative(nativeDir, cc),
  ]);
  return {
    tools: { shell: '/bin/sh', bwrap, prlimit, setpriv, unshare },
    disableUserns: help.output.includes('--disable-userns'),
    shared: {
      nodeBinary: await realpath(process.execPath),
      starterBinary: native.ok ? native.starter : undefined,
      supervisorDir: path.join(import.meta.dirname, 'supervisor'),
      nodeModulesDir: await findNodeModules(import.meta.dirname),
      systemEntries: await systemEntries(),
      hostEtc: await hostEtc(),
      procMasks: await procMasks(),
    },
    seccomp: await loadSeccompProgram(),
    root: process.getuid?.() === 0,
    native,
  };
}

/**
 * Who else claims the instances' host uid range on this host: named users
 * (/etc/passwd) and subordinate ranges (/etc/subuid, /etc/subgid) that
 * overlap it. An instance's uid must be nobody else's.
 */
export async function hostUidRangeConflicts(): Promise<string[]> {
  const end = HOST_UID_BASE + HOST_UID_SPAN;
  const inRange = (first: number, count: number) => first < end && first + count > HOST_UID_BASE;
  const conflicts: string[] = [];
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
  for (const line of passwd.split('\n')) {
    const [name = '', , uid = ''] = line.split(':');
    if (/^\d+$/.test(uid) && inRange(Number(uid), 1)) conflicts.push(`user ${name} (/etc/passwd)`);
  }
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const [name = '', first = '', count = ''] = line.split(':');
      if (/^\d+$/.test(first) && /^\d+$/.test(count) && inRange(Number(first), Number(count)))
        conflicts.push(`${name}'s subordinate range (${file})`);
    }
  }
  return conflicts;
}
