import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { UnenforcedLimit } from '../../config.ts';
import type { InstanceLimits, InstanceSpec } from './driver.ts';
import { prepareInstanceDir, probeSandbox, type SandboxProbe } from './instance-dir.ts';
import {
  detectSandboxHost,
  findExecutable,
  hostUidRangeConflicts,
  type SandboxHost,
} from './sandbox-host.ts';
import { detectVolumeImages, type VolumeSupport } from './volume-image.ts';

// AGT-6: what this host can enforce per instance, the setup that does it,
// and the refusal of a start whose limit it cannot hold (unless the operator
// allowed that limit by name: a limit is never dropped silently). cgroups
// when a writable hierarchy exists (v2 with memory, pids and cpu delegated to
// the driver's own cgroup, else v1 memory, pids and cpu), and resource limits
// through prlimit: open files always, file size (the volume's first line;
// the volume image, volume-image.ts, is the whole), no core dumps (they
// would carry secrets to the host's disk), and, only where the pids cgroup
// is missing, RLIMIT_NPROC (counted per real uid and ignored for root, so
// only with the instance's own host uid). No RLIMIT_AS: measured,
// node needs 800 MiB of address space to start and WebAssembly (fetch's HTTP
// parser) reserves about 10 GiB more, so any cap low enough to matter breaks
// the agent; without a memory cgroup, usage-watch.ts measures memory
// instead. docs/runtime.md has the table.

const MIB = 1024 * 1024;
const CPU_PERIOD_US = 100_000;

export type Controller = 'memory' | 'pids' | 'cpu';
const CONTROLLERS: readonly Controller[] = ['memory', 'pids', 'cpu'];

export interface CgroupSupport {
  readonly version: 1 | 2 | undefined;
  /** Per controller, the directory under which instance cgroups are made (…/enclave), when writable. */
  readonly parents: Readonly<Partial<Record<Controller, string>>>;
  /** Why a controller is missing, for `how`. */
  readonly notes: readonly string[];
  /** The driver's own cgroup, which warmCgroupJoin re-joins: its line in /proc/self/cgroup ('' on v2) and path. */
  readonly own?: { readonly key: string; readonly path: string; readonly procs: string } | undefined;
}

interface MountEntry {
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly superOptions: readonly string[];
}

async function readMounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const fields = left.split(' ');
    const [fsType = '', , superOptions = ''] = right.split(' ');
    entries.push({
      root: unescapeMount(fields[3] ?? ''),
      mountPoint: unescapeMount(fields[4] ?? ''),
      fsType,
      superOptions: superOptions.split(','),
    });
  }
  return entries;
}

function unescapeMount(value: string): string {
  return value.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** This process's cgroup path per v1 controller, and its v2 path under the key ''. */
async function ownCgroups(): Promise<Map<string, string>> {
  const text = await readFile('/proc/self/cgroup', 'utf8').catch(() => '');
  const paths = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^\d+:([^:]*):(.*)$/.exec(line);
    if (match === null) continue;
    const [, names = '', cgroupPath = '/'] = match;
    for (const name of names.split(',')) paths.set(name, cgroupPath);
  }
  return paths;
}

/** The directory of `cgroupPath` in a hierarchy mounted at `mount` (a container may mount a sub-tree). */
function onDisk(mount: MountEntry, cgroupPath: string): string {
  const relative =
    mount.root !== '/' && (cgroupPath === mount.root || cgroupPath.startsWith(`${mount.root}/`))
      ? cgroupPath.slice(mount.root.length)
      : cgroupPath;
  return path.join(mount.mountPoint, relative);
}

/** Makes and removes a probe cgroup with one limit written: the only honest test of "writable". */
async function canCreate(parent: string, limitFile: string, value: string): Promise<boolean> {
  const probe = path.join(parent, `probe-${process.pid}-${randomBytes(3).toString('hex')}`);
  try {
    await mkdir(parent, { recursive: true });
    await mkdir(probe);
  } catch {
    return false;
  }
  try {
    await writeFile(path.join(probe, limitFile), value);
    return true;
  } catch {
    return false;
  } finally {
    await rmdir(probe).catch(() => undefined);
  }
}

const PROBE_FILES: Record<1 | 2, Record<Controller, [string, string]>> = {
  1: {
    memory: ['memory.limit_in_bytes', String(256 * MIB)],
    pids: ['pids.max', '64'],
    cpu: ['cpu.cfs_quota_us', String(CPU_PERIOD_US)],
  },
  2: {
    memory: ['memory.max', String(256 * MIB)],
    pids: ['pids.max', '64'],
    cpu: ['cpu.max', `${CPU_PERIOD_US} ${CPU_PERIOD_US}`],
  },
};

async function detectV2(mount: MountEntry, own: string): Promise<CgroupSupport | undefined> {
  const base = onDisk(mount, own);
  const available = (await readFile(path.join(base, 'cgroup.controllers'), 'utf8').catch(() => ''))
    .trim()
    .split(/\s+/);
  const wanted = CONTROLLERS.filter((name) => available.includes(name));
  if (wanted.length === 0) return undefined;
  const enable = wanted.map((name) => `+${name}`).join(' ');
  const parent = path.join(base, 'enclave');
  try {
    // The no-internal-processes rule: this works when the driver's cgroup is
    // the root, or has been delegated with the driver in a leaf below it.
    await writeFile(path.join(base, 'cgroup.subtree_control'), enable);
    await mkdir(parent, { recursive: true });
    await writeFile(path.join(parent, 'cgroup.subtree_control'), enable);
  } catch (error) {
    return {
      version: 2,
      parents: {},
      notes: [
        `cgroup v2 at ${base} cannot delegate ${wanted.join(', ')} (${(error as NodeJS.ErrnoException).code ?? 'error'}): run the worker in a delegated cgroup of its own`,
      ],
    };
  }
  const parents: Partial<Record<Controller, string>> = {};
  for (const name of wanted) {
    const [file, value] = PROBE_FILES[2][name];
    if (await canCreate(parent, file, value)) parents[name] = parent;
  }
  return {
    version: 2,
    parents,
    notes: [],
    own: { key: '', path: own, procs: path.join(base, 'cgroup.procs') },
  };
}

async function detectV1(mounts: readonly MountEntry[], own: Map<string, string>): Promise<CgroupSupport> {
  const parents: Partial<Record<Controller, string>> = {};
  const notes: string[] = [];
  let ownCgroup: CgroupSupport['own'];
  for (const name of CONTROLLERS) {
    const mount = mounts.find((entry) => entry.fsType === 'cgroup' && entry.superOptions.includes(name));
    if (mount === undefined) {
      notes.push(`no cgroup v1 ${name} hierarchy`);
      continue;
    }
    const parent = path.join(onDisk(mount, own.get(name) ?? '/'), 'enclave');
    const [file, value] = PROBE_FILES[1][name];
    if (await canCreate(parent, file, value)) {
      parents[name] = parent;
      ownCgroup ??= {
        key: name,
        path: own.get(name) ?? '/',
        procs: path.join(path.dirname(parent), 'cgroup.procs'),
      };
    } else notes.push(`cgroup v1 ${name} at ${mount.mountPoint} is not writable`);
  }
  return { version: Object.keys(parents).length > 0 ? 1 : undefined, parents, notes, own: ownCgroup };
}

/**
 * Moving a process into a cgroup takes a lock every hierarchy shares, and
 * the first move after a quiet spell waits for an RCU grace period (10 to
 * 20 ms measured on a cgroup v1 host), which a cold start paid when its
 * launcher joined the instance's cgroups. As a start begins, the driver
 * moves itself into the cgroup it is already in (a change to nothing, and
 * only while it is still there), in the background: that wait then runs
 * beside the start's preparation, and the launcher's join, a few
 * milliseconds later, finds the lock warm. Where the file cannot be
 * written, nothing changes but the time.
 */
export async function warmCgroupJoin(support: CgroupSupport): Promise<void> {
  const own = support.own;
  if (own === undefined) return;
  if ((await ownCgroups()).get(own.key) !== own.path) return;
  await writeFile(own.procs, `${process.pid}\n`).catch(() => undefined);
}

/** Which cgroup controllers this process can give instances of its own. */
export async function detectCgroups(): Promise<CgroupSupport> {
  const mounts = await readMounts();
  const own = await ownCgroups();
  const unified = mounts.find((entry) => entry.fsType === 'cgroup2');
  const hasV1 = mounts.some((entry) => entry.fsType === 'cgroup');
  if (unified !== undefined && !hasV1) {
    const v2 = await detectV2(unified, own.get('') ?? '/');
    if (v2 !== undefined) return v2;
    return { version: undefined, parents: {}, notes: ['cgroup v2 offers no memory, pids or cpu controller'] };
  }
  if (hasV1) return detectV1(mounts, own);
  return { version: undefined, parents: {}, notes: ['no cgroup hierarchy is mounted'] };
}

export interface InstanceCgroup {
  /** cgroup.procs files the launcher joins. */
  readonly procsFiles: readonly string[];
  /** OOM kills inside the instance so far (0 where the kernel does not count them). */
  oomKills(): Promise<number>;
  /** Removes the cgroups once their processes are gone. */
  remove(): Promise<void>;
}

/** Directory names are agent ids (checked by the driver), never a path of their own. */
export async function createInstanceCgroup(
  support: CgroupSupport,
  name: string,
  limits: InstanceLimits,
): Promise<InstanceCgroup | undefined> {
  const version = support.version;
  if (version === undefined) return undefined;
  const dirs = new Map<string, Controller[]>();
  for (const controller of CONTROLLERS) {
    const parent = support.parents[controller];
    if (parent === undefined) continue;
    const dir = path.join(parent, name);
    dirs.set(dir, [...(dirs.get(dir) ?? []), controller]);
  }
  if (dirs.size === 0) return undefined;
  const made: string[] = [];
  const remove = async () => {
    for (const dir of made) await removeCgroup(dir);
  };
  try {
    for (const [dir, controllers] of dirs) {
      await removeCgroup(dir); // a leftover from a process that died: empty, or the mkdir below fails
      await mkdir(dir);
      made.push(dir);
      for (const controller of controllers) await writeLimit(version, dir, controller, limits);
    }
  } catch (error) {
    await remove();
    throw error;
  }
  const memoryDir =
    support.parents.memory === undefined ? undefined : path.join(support.parents.memory, name);
  return {
    procsFiles: made.map((dir) => path.join(dir, 'cgroup.procs')),
    async oomKills() {
      if (memoryDir === undefined) return 0;
      const file = path.join(memoryDir, version === 2 ? 'memory.events' : 'memory.oom_control');
      const text = await readFile(file, 'utf8').catch(() => '');
      return Number(/^oom_kill (\d+)$/m.exec(text)?.[1] ?? 0);
    },
    remove,
  };
}

async function writeLimit(
  version: 1 | 2,
  dir: string,
  controller: Controller,
  limits: InstanceLimits,
): Promise<void> {
  const write = (file: string, value: string) => writeFile(path.join(dir, file), value);
  const optional = (file: string, value: string) => write(file, value).catch(() => undefined);
  const memory = String(limits.memoryMb * MIB);
  const quota = Math.max(1000, Math.round((limits.cpuPercent / 100) * CPU_PERIOD_US));
  if (version === 2) {
    if (controller === 'memory') {
      await write('memory.max', memory);
      await optional('memory.swap.max', '0');
    } else if (controller === 'pids') await write('pids.max', String(limits.processes));
    else {
      await write('cpu.max', `${quota} ${CPU_PERIOD_US}`);
      await optional('cpu.max.burst', String(quota));
    }
    return;
  }
  if (controller === 'memory') {
    await write('memory.limit_in_bytes', memory);
    await optional('memory.memsw.limit_in_bytes', memory); // no swap either, where swap accounting is on
  } else if (controller === 'pids') await write('pids.max', String(limits.processes));
  else {
    await write('cpu.cfs_period_us', String(CPU_PERIOD_US));
    await write('cpu.cfs_quota_us', String(quota));
    await optional('cpu.cfs_burst_us', String(quota));
  }
}

/** rmdir a cgroup, waiting briefly for exiting processes to leave it. */
async function removeCgroup(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') throw error;
      await new Promise((resolve) => setTimeout(resolve, 20 * (attempt + 1)));
    }
  }
  throw new Error(`cgroup ${dir} still has processes`);
}

/** How limits are enforced for one instance, given the host's support. */
export interface RlimitPlan {
  readonly processesByCgroup: boolean;
  /** RLIMIT_NPROC counts per host uid: usable only when the instance has one of its own. */
  readonly ownHostUid: boolean;
}

/** prlimit's options for an instance (`--resource=soft:hard`): the agent cannot raise a hard limit. */
export function rlimitArgs(limits: InstanceLimits, plan: RlimitPlan): string[] {
  const both = (value: number) => `${value}:${value}`;
  const args = [`--nofile=${both(limits.openFiles)}`, `--fsize=${both(limits.volumeMb * MIB)}`, '--core=0:0'];
  if (!plan.processesByCgroup && plan.ownHostUid) args.push(`--nproc=${both(limits.processes)}`);
  return args;
}

/** The limits a host may be unable to hold, by their ENCLAVE_UNENFORCED_LIMITS names. */
export type EnforceableLimit = Extract<UnenforcedLimit, 'cpu' | 'processes' | 'volume'>;
export type LimitEnforcement = Readonly<Record<EnforceableLimit, boolean>>;

const UNENFORCED_WHY: Record<EnforceableLimit, string> = {
  cpu: 'cpu_percent cannot be enforced on this host (no cpu cgroup)',
  processes: 'processes cannot be enforced on this host (no pids cgroup and no host uid of its own)',
  volume:
    'volume_mb cannot be enforced on this host (no volume images: they need a root worker with loop devices)',
};

/** How one instance's limits are held, given its cgroup and whether it runs as a host uid of its own. */
export function limitEnforcement(input: {
  readonly cgroup: InstanceCgroup | undefined;
  readonly cgroups: CgroupSupport;
  readonly prlimit: boolean;
  readonly ownHostUid: boolean;
  readonly volumeImage: boolean;
}): LimitEnforcement {
  const byCgroup = (name: Controller) =>
    input.cgroup !== undefined && input.cgroups.parents[name] !== undefined;
  return {
    cpu: byCgroup('cpu'),
    processes: byCgroup('pids') || (input.prlimit && input.ownHostUid),
    volume: input.volumeImage,
  };
}

/**
 * Why an instance must not start (AGT-6: a limit is never dropped
 * silently), or undefined: each limit this host cannot hold, unless the
 * operator named it in ENCLAVE_UNENFORCED_LIMITS. Shown on the agent's page:
 * no host path.
 */
export function startRefusal(
  enforced: LimitEnforcement,
  allowed: readonly UnenforcedLimit[],
): string | undefined {
  const refused = (Object.keys(UNENFORCED_WHY) as EnforceableLimit[]).filter(
    (name) => !enforced[name] && !allowed.includes(name),
  );
  if (refused.length === 0) return undefined;
  return `${refused.map((name) => UNENFORCED_WHY[name]).join('; ')}; the operator can let ${refused.length === 1 ? 'it' : 'them'} go unenforced with ENCLAVE_UNENFORCED_LIMITS=${refused.join(',')}`;
}

export interface HostLimitSupport {
  /** Hard, by a memory cgroup (otherwise measured). */
  readonly memory: boolean;
  readonly processes: boolean;
  readonly openFiles: boolean;
  readonly cpu: boolean;
  /** Hard, by a volume image (otherwise measured, if the operator allows it). */
  readonly volume: boolean;
  /** Whether a sandbox sets up here as a start makes it (stage, host uid, user namespaces). */
  readonly sandbox: SandboxProbe;
  /** Users and subordinate ranges that overlap the instances' host uids (none, on a sound host). */
  readonly uidConflicts: readonly string[];
  /** Every sandbox runs under the seccomp filter of seccomp/denied-syscalls.list. */
  readonly seccomp: boolean;
  /** In words: what enforces each limit here, and what does not. */
  readonly how: string;
}

/**
 * What this host enforces per instance (`enclave doctor`), measured: cgroups
 * are created and removed, a volume image is loop-mounted, and a sandbox is
 * set up as a start would (in `instancesDir` when given, so its permissions
 * count too).
 */
export async function hostLimitSupport(instancesDir?: string): Promise<HostLimitSupport> {
  const cgroups = await detectCgroups();
  let host: SandboxHost | undefined;
  try {
    // The driver builds its native helpers in the same place: built once, they are found there.
    host = await detectSandboxHost(
      instancesDir === undefined ? undefined : path.join(instancesDir, '.native'),
    );
  } catch {
    host = undefined;
  }
  const scratch = instancesDir ?? tmpdir();
  const volumes: VolumeSupport =
    host === undefined
      ? { images: false, reason: 'bubblewrap is not installed' }
      : await detectVolumeImages(scratch, { unshare: host.tools.unshare, find: findExecutable });
  const sandbox: SandboxProbe =
    host === undefined
      ? { ok: false, reason: 'bubblewrap is not installed' }
      : await probeShared(host, scratch);
  const prlimit = host?.tools.prlimit !== undefined;
  const ownUid = host?.root === true;
  const conflicts = await hostUidRangeConflicts();
  const memory = cgroups.parents.memory !== undefined;
  const pids = cgroups.parents.pids !== undefined;
  const cpu = cgroups.parents.cpu !== undefined;
  const byCgroup = CONTROLLERS.filter((name) => cgroups.parents[name] !== undefined);
  const how = [
    byCgroup.length > 0
      ? `cgroup v${cgroups.version}: ${byCgroup.join(', ')}`
      : `no writable cgroup (${cgroups.notes.join('; ') || 'none found'})`,
    ...(byCgroup.length > 0 && cgroups.notes.length > 0
      ? [`not by cgroup: ${cgroups.notes.join('; ')}`]
      : []),
    prlimit
      ? `prlimit: open files, file size up to the volume limit, no core dumps${!pids && ownUid ? ", processes (RLIMIT_NPROC on the instance's own host uid)" : ''}`
      : 'prlimit (util-linux) is not installed: no open-file, file-size or process limit by rlimit',
    volumes.images
      ? 'volume: an ext4 image per instance, loop-mounted in the sandbox (ENOSPC past volume_mb; the host holds at most volume_mb + 4.1 % + 280 KiB)'
      : `volume: no hard limit (${volumes.reason}); measured, if allowed`,
    ...(memory
      ? []
      : [
          "memory: not a hard limit here; the sandbox's resident memory is measured each second and an instance over its limit is stopped",
        ]),
    host === undefined
      ? 'seccomp: no sandbox'
      : host.seccomp.ok
        ? `seccomp: ${host.seccomp.denied.length} syscalls denied (io_uring, keyctl, bpf, mount, unshare, ptrace …)`
        : `seccomp: no filter (${host.seccomp.reason})`,
    host?.root === true
      ? `host uid: each instance runs as a host uid of its own, never root${conflicts.length > 0 ? `, from a range also claimed by ${conflicts.join(', ')}` : ''}`
      : "host uid: instances run as the worker's own uid",
    ...(host === undefined || instancesDir === undefined
      ? []
      : [
          host.native.ok
            ? 'native launcher and starter: built'
            : `native launcher and starter: none (${host.native.reason}), so instances start slower`,
        ]),
    sandbox.ok ? 'a probe sandbox starts' : `a probe sandbox fails: ${sandbox.reason}`,
  ].join('; ');
  return {
    memory,
    processes: pids || (prlimit && ownUid),
    openFiles: prlimit,
    cpu,
    volume: volumes.images,
    sandbox,
    uidConflicts: conflicts,
    seccomp: host?.seccomp.ok === true,
    how,
  };
}

/** A sandbox of the shared binds and a throwaway instance directory, set up as a start would and run with `true`. */
async function probeShared(host: SandboxHost, base: string): Promise<SandboxProbe> {
  let dir: string | undefined;
  try {
    await mkdir(base, { recursive: true });
    dir = await mkdtemp(path.join(base, '.probe-'));
    await chmod(dir, 0o711);
    const templateDir = path.join(dir, 'template');
    await mkdir(templateDir, { mode: 0o755 });
    const agentId = 'probe';
    const spec: InstanceSpec = {
      agentId,
      tenantId: agentId,
      command: ['true'],
      templateDir,
      port: 8080,
      limits: { memoryMb: 64, processes: 16, openFiles: 64, cpuPercent: 100, volumeMb: 1 },
      egress: { tenantId: agentId, agentId, allowlist: [] },
      modelGateway: false,
      env: {},
      secrets: new Map(),
      supportKey: undefined,
    };
    const prepared = await prepareInstanceDir(dir, spec, host, {
      images: false,
      reason: 'the probe needs no volume image',
    });
    // Any file serves as the egress socket's bind source for a sandbox that only runs `true`.
    await writeFile(path.join(prepared.hostDir, 'egress.sock'), '', { mode: 0o644 });
    return await probeSandbox(host, prepared);
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  } finally {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}
