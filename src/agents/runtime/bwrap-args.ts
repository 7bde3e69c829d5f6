import { createHash } from 'node:crypto';
import path from 'node:path';

// The bubblewrap sandbox of one instance, as an argv: pure functions from a
// layout (host paths) to the arguments, so what the sandbox sees can be
// read, reviewed and tested without running it. docs/runtime.md explains
// every namespace, bind and limit.

/** The unprivileged uid (and gid) the agent and its supervisor have inside the sandbox. */
export const SANDBOX_UID = 1000;
/** Where things are inside the sandbox. */
export const SANDBOX_PATHS = Object.freeze({
  app: '/app',
  data: '/data',
  egressSocket: '/run/enclave/egress.sock',
  gatewaySocket: '/run/enclave/gateway.sock',
  node: '/opt/enclave/bin/node',
  starter: '/opt/enclave/bin/enclave-starter',
  supervisorDir: '/opt/enclave/supervisor',
  supervisor: '/opt/enclave/supervisor/supervisor.mjs',
  nodeModules: '/opt/enclave/node_modules',
});
export const SANDBOX_PATH_ENV = '/opt/enclave/bin:/usr/local/bin:/usr/bin:/bin';
/** fds the launcher hands through: config and secrets in, control both ways (to the supervisor), bwrap's info out. */
export const CONFIG_FD = 3;
export const CONTROL_FD = 4;
export const INFO_FD = 5;
/** Listening sockets the host binds in its own directory and hands in: the supervisor only accepts on them. */
export const INGRESS_FD = 6;
export const SUPPORT_FD = 7;
/** bubblewrap reads the seccomp program (seccomp/) from this fd (`--seccomp 8`); 6 and 7 are listening sockets. */
export const SECCOMP_FD = 8;

/** Host uids for instances (one each, derived from the agent id): 0x5E000000 … 0x5EFFFFFF. */
export const HOST_UID_BASE = 0x5e000000;
export const HOST_UID_SPAN = 0x01000000;

/** What a top-level system path is on this host: merged-/usr hosts have symlinks, older ones directories. */
export type SystemEntry =
  | { readonly path: string; readonly kind: 'symlink'; readonly target: string }
  | { readonly path: string; readonly kind: 'dir' };

/** A /proc entry masked inside the sandbox: a read-only empty tmpfs over a directory, /dev/null over a file. */
export interface MaskedEntry {
  readonly path: string;
  readonly kind: 'dir' | 'file';
}

export interface SandboxLayout {
  readonly templateDir: string;
  readonly volumeDir: string;
  /**
   * The egress socket in the instance's host directory (host-sockets.ts):
   * the one thing of that directory the sandbox sees, bound read-only.
   */
  readonly egressSocket: string;
  /** The model gateway's socket there (AGT-7), bound read-only beside it; undefined for an agent that uses no models. */
  readonly gatewaySocket?: string | undefined;
  /** Generated passwd, group, hosts and nsswitch.conf (etcFiles()), read-only. */
  readonly etcDir: string;
  /** The real path of the node binary that runs the supervisor (and `node` commands). */
  readonly nodeBinary: string;
  /** The native starter (native/starter.c) built on this host; undefined: the supervisor starts the agent itself. */
  readonly starterBinary: string | undefined;
  readonly supervisorDir: string;
  /** The repository's node_modules (the supervisor imports ssh2 from it), read-only. */
  readonly nodeModulesDir: string;
  /** /bin, /sbin, /lib, /lib64 …: bound or re-created as symlinks into /usr. */
  readonly systemEntries: readonly SystemEntry[];
  /** Read-only /etc entries that exist on this host (certificates, linker cache). */
  readonly hostEtc: readonly string[];
  /** The PROC_MASK_CANDIDATES this kernel has (bubblewrap cannot mount over an entry that does not exist). */
  readonly procMasks: readonly MaskedEntry[];
}

export interface SandboxOptions {
  /** Size of the private /tmp, in MiB (tmpfs: it counts as memory). */
  readonly tmpMb: number;
  /** Size of /dev/shm, in MiB. */
  readonly shmMb: number;
  /** bubblewrap ≥ 0.8 can forbid user namespaces inside the sandbox. */
  readonly disableUserns: boolean;
  /** bubblewrap loads the seccomp program from SECCOMP_FD, which the launcher must then provide. */
  readonly seccomp: boolean;
}

/** /etc files from the host that a program may need and that hold nothing secret. Never /etc/ssl/private or /etc/shadow. */
export const HOST_ETC_CANDIDATES = Object.freeze([
  '/etc/ssl/certs',
  '/etc/ssl/openssl.cnf',
  '/etc/ca-certificates',
  '/etc/ca-certificates.conf',
  '/etc/ld.so.cache',
  '/etc/alternatives',
  '/etc/localtime',
  '/etc/mime.types',
]);

/**
 * /proc entries that container runtimes mask (runc's default maskedPaths):
 * kernel addresses, timers and scheduler internals of the whole host, the
 * keyring, hardware. The rest of /proc is read-only; /sys is not mounted at all.
 */
export const PROC_MASK_CANDIDATES = Object.freeze([
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/proc/timer_list',
  '/proc/timer_stats',
]);

/** Top-level system paths besides /usr, bound read-only when they exist. */
export const SYSTEM_CANDIDATES = Object.freeze(['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32']);

/** The generated /etc files: one user (uid 1000, home /data), loopback names, files-only lookups. */
export function etcFiles(): Readonly<Record<string, string>> {
  return Object.freeze({
    passwd: `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:${SANDBOX_UID}:${SANDBOX_UID}:agent:/data:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    group: `root:x:0:\nagent:x:${SANDBOX_UID}:\nnogroup:x:65534:\n`,
    hosts: '127.0.0.1\tlocalhost enclave\n::1\tlocalhost ip6-localhost ip6-loopback\n',
    'nsswitch.conf': 'passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n',
  });
}

/**
 * The instance's uid on the host when the driver can drop root: one per
 * agent, stable across restarts (its volume keeps its owner), from a range
 * no distribution allocates. Two agents may share one by a 1 in 16.7 million
 * chance per pair; they are still apart by every namespace.
 */
export function sandboxHostUid(agentId: string): number {
  const digest = createHash('sha256').update(agentId).digest();
  return HOST_UID_BASE + (digest.readUInt32BE(0) % HOST_UID_SPAN);
}

/** The port the supervisor's HTTP proxy listens on inside the sandbox: 3128, or 3129 when the agent has 3128. */
export function proxyPortFor(agentPort: number): number {
  return agentPort === 3128 ? 3129 : 3128;
}

/** The model gateway's loopback port inside the sandbox (AGT-7): 4000, or the first above it the agent and proxy leave free. */
export function gatewayPortFor(agentPort: number): number {
  const taken = new Set([agentPort, proxyPortFor(agentPort)]);
  let port = 4000;
  while (taken.has(port)) port += 1;
  return port;
}

/**
 * The agent's argv as the supervisor runs it: `node` is the bound node
 * binary; a program path with a slash resolves against /app (the template
 * directory); a bare name is looked up on the sandbox's PATH.
 */
export function sandboxCommand(command: readonly string[]): string[] {
  const [program, ...args] = command;
  if (program === undefined) throw new Error('the command is empty');
  if (program === 'node') return [SANDBOX_PATHS.node, ...args];
  if (program.includes('/')) return [path.posix.resolve(SANDBOX_PATHS.app, program), ...args];
  return [program, ...args];
}

/** bubblewrap's arguments: namespaces, binds, then the supervisor as the sandbox's first process. */
export function bwrapArgs(layout: SandboxLayout, options: SandboxOptions): string[] {
  const args = [
    // Its own user, pid, mount (implied), ipc, uts, cgroup and network namespace (loopback only).
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup',
    '--unshare-net',
    '--uid',
    String(SANDBOX_UID),
    '--gid',
    String(SANDBOX_UID),
    '--hostname',
    'enclave',
    ...(options.disableUserns ? ['--disable-userns'] : []),
    // Loaded last, just before the supervisor starts: denied-syscalls.list.
    ...(options.seccomp ? ['--seccomp', String(SECCOMP_FD)] : []),
    '--cap-drop',
    'ALL',
    '--new-session',
    '--die-with-parent',
    '--info-fd',
    String(INFO_FD),
    '--clearenv',
    '--setenv',
    'PATH',
    SANDBOX_PATH_ENV,
    '--setenv',
    'HOME',
    SANDBOX_PATHS.data,
    '--setenv',
    'LANG',
    'C.UTF-8',
    // The system, read-only.
    '--ro-bind',
    '/usr',
    '/usr',
  ];
  for (const entry of layout.systemEntries) {
    if (entry.kind === 'symlink') args.push('--symlink', entry.target, entry.path);
    else args.push('--ro-bind', entry.path, entry.path);
  }
  for (const file of layout.hostEtc) args.push('--ro-bind', file, file);
  for (const name of Object.keys(etcFiles())) {
    args.push('--ro-bind', path.join(layout.etcDir, name), `/etc/${name}`);
  }
  // Its own /proc, read-only: a sandbox mapped to host root could otherwise
  // write global sysctls (core_pattern …) through the files' owner bits.
  args.push('--proc', '/proc');
  for (const entry of layout.procMasks) {
    if (entry.kind === 'dir') args.push('--size', '4096', '--tmpfs', entry.path, '--remount-ro', entry.path);
    else args.push('--ro-bind', '/dev/null', entry.path);
  }
  args.push(
    '--remount-ro',
    '/proc',
    // bubblewrap's /dev (its device nodes, a private devpts) is a tmpfs it
    // cannot size: read-only, nothing can be written into it. The device
    // nodes stay usable (they are mounts of their own, and a read-only mount
    // does not stop writes to a device), and /dev/shm is a sized tmpfs.
    '--dev',
    '/dev',
    '--remount-ro',
    '/dev',
    '--perms',
    '1777',
    '--size',
    String(options.shmMb * 1024 * 1024),
    '--tmpfs',
    '/dev/shm',
    '--perms',
    '1777',
    '--size',
    String(options.tmpMb * 1024 * 1024),
    '--tmpfs',
    '/tmp',
    // The instance's own files.
    '--bind',
    layout.volumeDir,
    SANDBOX_PATHS.data,
    // The one host socket the sandbox connects to, read-only: it can neither replace nor remove it.
    '--ro-bind',
    layout.egressSocket,
    SANDBOX_PATHS.egressSocket,
    ...(layout.gatewaySocket === undefined
      ? []
      : ['--ro-bind', layout.gatewaySocket, SANDBOX_PATHS.gatewaySocket]),
    '--ro-bind',
    layout.templateDir,
    SANDBOX_PATHS.app,
    // The platform's part: node, the supervisor and the modules it imports.
    '--ro-bind',
    layout.nodeBinary,
    SANDBOX_PATHS.node,
    ...(layout.starterBinary === undefined ? [] : ['--ro-bind', layout.starterBinary, SANDBOX_PATHS.starter]),
    '--ro-bind',
    layout.supervisorDir,
    SANDBOX_PATHS.supervisorDir,
    '--ro-bind',
    layout.nodeModulesDir,
    SANDBOX_PATHS.nodeModules,
    // Nothing else may be created at the top level.
    '--remount-ro',
    '/',
    '--chdir',
    SANDBOX_PATHS.app,
  );
  return args;
}

/**
 * The sandbox's first command: the supervisor (one V8 worker thread: it
 * only moves bytes), under the native starter where the host built one,
 * which starts the agent beside it and tells it so (`--starter`).
 */
export function supervisorArgv(starter: boolean): string[] {
  const supervisor = [
    SANDBOX_PATHS.node,
    '--v8-pool-size=1',
    '--max-old-space-size=48',
    SANDBOX_PATHS.supervisor,
  ];
  return starter ? [SANDBOX_PATHS.starter, ...supervisor, '--starter'] : supervisor;
}

/** A bind source staged by the launcher as root: read-only (a file or a directory) or a read-write directory. */
export interface StagedBind {
  readonly kind: 'file' | 'dir' | 'rw';
  readonly source: string;
  /** Its name in the stage directory: one path segment. */
  readonly name: string;
}

/**
 * What the launcher, still root, sets up in a mount namespace of its own
 * before it drops to the instance's host uid: a bind of every source of the
 * instance's sandbox on its mount point in STAGE_DIR (so that uid needs no
 * access to any host path: a node binary under /root, a data directory of
 * mode 0700), and the volume's image mounted at `data`. All of it is one
 * `mount -a` of a mount table the host wrote (stageFstab): one process
 * rather than one per mount. Nothing of it is seen outside that namespace,
 * and it all goes with the sandbox's last process.
 */
export interface LaunchStage {
  readonly unshare: string;
  /** The stage's mount table: a root-only file of the instance directory, never bound into the sandbox. */
  readonly fstab: string;
}

/** The layout as bwrap sees it once the launcher has staged it in `stageDir` (`image`: the volume is one). */
export function stageLayout(
  layout: SandboxLayout,
  stageDir: string,
  image: boolean,
): { layout: SandboxLayout; binds: StagedBind[] } {
  const binds: StagedBind[] = [
    { kind: 'file', source: layout.nodeBinary, name: 'node' },
    ...(layout.starterBinary === undefined
      ? []
      : [{ kind: 'file', source: layout.starterBinary, name: 'starter' } as const]),
    { kind: 'dir', source: layout.supervisorDir, name: 'supervisor' },
    { kind: 'dir', source: layout.nodeModulesDir, name: 'node_modules' },
    { kind: 'dir', source: layout.templateDir, name: 'app' },
    { kind: 'dir', source: layout.etcDir, name: 'etc' },
    { kind: 'file', source: layout.egressSocket, name: 'egress.sock' },
    ...(layout.gatewaySocket === undefined
      ? []
      : [{ kind: 'file', source: layout.gatewaySocket, name: 'gateway.sock' } as const]),
    ...(image ? [] : [{ kind: 'rw', source: layout.volumeDir, name: 'data' } as const]),
  ];
  const staged = (name: string) => path.join(stageDir, name);
  return {
    layout: {
      ...layout,
      nodeBinary: staged('node'),
      starterBinary: layout.starterBinary === undefined ? undefined : staged('starter'),
      supervisorDir: staged('supervisor'),
      nodeModulesDir: staged('node_modules'),
      templateDir: staged('app'),
      etcDir: staged('etc'),
      egressSocket: staged('egress.sock'),
      gatewaySocket: layout.gatewaySocket === undefined ? undefined : staged('gateway.sock'),
      volumeDir: staged('data'),
    },
    binds,
  };
}

/**
 * The mount points the stage directory holds on the host (empty, root's),
 * which each launcher mounts over in its own namespace: one per name
 * stageLayout stages (`data`: the volume, a bind or its image).
 */
export const STAGE_MOUNT_POINTS: readonly { readonly name: string; readonly kind: 'file' | 'dir' }[] =
  Object.freeze([
    { name: 'node', kind: 'file' },
    { name: 'starter', kind: 'file' },
    { name: 'supervisor', kind: 'dir' },
    { name: 'node_modules', kind: 'dir' },
    { name: 'app', kind: 'dir' },
    { name: 'etc', kind: 'dir' },
    { name: 'egress.sock', kind: 'file' },
    { name: 'gateway.sock', kind: 'file' },
    { name: 'data', kind: 'dir' },
  ]);

/**
 * A path as one field of a mount table: every byte but a few plain ones as
 * an octal escape (libmount reads \ooo back), so no space, tab, newline or
 * `#` of a host path can split or end a line.
 */
function fstabField(value: string): string {
  let field = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const char = String.fromCharCode(byte);
    field += /^[A-Za-z0-9/._@+=:-]$/.test(char) ? char : `\\${byte.toString(8).padStart(3, '0')}`;
  }
  return field;
}

/** The stage's mount table (`mount -a -T`): every bind (read-only but the volume), then the volume's image. */
export function stageFstab(
  stageDir: string,
  binds: readonly StagedBind[],
  image: string | undefined,
): string {
  const lines = binds.map((bind) => {
    const options = bind.kind === 'rw' ? 'bind,nosuid,nodev' : 'bind,ro,nosuid,nodev';
    return `${fstabField(bind.source)} ${fstabField(path.join(stageDir, bind.name))} none ${options} 0 0`;
  });
  if (image !== undefined) {
    lines.push(`${fstabField(image)} ${fstabField(path.join(stageDir, 'data'))} ext4 loop,nosuid,nodev 0 0`);
  }
  return `${lines.join('\n')}\n`;
}

export interface LaunchOptions {
  readonly shell: string;
  /** cgroup.procs files the launcher writes its own pid into before bubblewrap starts. */
  readonly cgroupProcs: readonly string[];
  /** Resource limits as prlimit takes them (`--nofile=N:N` …): given only where something applies them. */
  readonly rlimits: readonly string[];
  /** prlimit, which applies them without the native launcher. */
  readonly prlimit: string | undefined;
  /** Binds and the volume mount made as root (a root worker only). */
  readonly stage: LaunchStage | undefined;
  /** setpriv, with the host uid to drop to; undefined keeps the driver's uid (a worker that is not root). */
  readonly setpriv: { readonly binary: string; readonly uid: number } | undefined;
  readonly bwrap: string;
  /** The sandbox binds the native starter: it is the first command (supervisorArgv). */
  readonly starter: boolean;
  /** The native launcher (native/launcher.c), which does in one process what the chain below does. */
  readonly launcher: string | undefined;
}

// The launcher's one shell, the last step before the uid drop and
// bubblewrap. It joins the instance's cgroups in a background job (the
// kernel may hold the first join for an RCU grace period: limits.ts
// warmCgroupJoin) while, as root, it mounts the stage; it waits for both
// before bubblewrap, the first process it starts that counts, so every
// process of the sandbox is born inside the cgroups. Paths are its
// parameters, never part of its text: $1 the mount table ("" for none),
// then the cgroup.procs files up to `--`, then the command. mount's own
// messages name host paths: they are dropped, and a fixed line says what
// failed (the driver reports it as the reason).
const LAUNCH_SCRIPT = [
  'stage=$1; shift',
  '( for f do [ "$f" = -- ] && break; { printf "%s\\n" $$ > "$f"; } 2>/dev/null || exit 1; done ) & join=$!',
  'if [ -n "$stage" ]; then mount -a -T "$stage" 2>/dev/null || { kill $join 2>/dev/null; printf "enclave-launch: could not stage the sandbox or mount its volume\\n" >&2; exit 125; }; fi',
  'wait $join || { printf "enclave-launch: could not join the instance cgroups\\n" >&2; exit 125; }',
  'while [ "$1" != -- ]; do shift; done; shift',
  'exec "$@"',
].join('\n');

/**
 * The host argv: the native launcher where the host built it; otherwise
 * prlimit, then (as root) unshare into a mount namespace of its own, then
 * the launcher's shell (cgroups and the stage), then setpriv (as root: drop
 * to the instance's host uid). Then bubblewrap. No secret is in it.
 */
export function launchArgv(options: LaunchOptions, bwrap: readonly string[]): string[] {
  const sandbox = [options.bwrap, ...bwrap, '--', ...supervisorArgv(options.starter)];
  const stage = options.stage;
  if (options.launcher !== undefined) {
    const argv = [options.launcher];
    for (const file of options.cgroupProcs) argv.push('--cgroup', file);
    argv.push(...options.rlimits);
    if (stage !== undefined) argv.push('--stage', stage.fstab, '--uid', String(options.setpriv?.uid ?? 0));
    return [...argv, '--', ...sandbox];
  }
  const argv: string[] = [];
  if (options.rlimits.length > 0 && options.prlimit !== undefined) {
    argv.push(options.prlimit, ...options.rlimits, '--');
  }
  if (stage !== undefined) argv.push(stage.unshare, '--mount', '--propagation', 'private', '--');
  argv.push(
    options.shell,
    '-c',
    LAUNCH_SCRIPT,
    'enclave-launch',
    stage?.fstab ?? '',
    ...options.cgroupProcs,
    '--',
  );
  if (options.setpriv !== undefined) {
    const id = String(options.setpriv.uid);
    argv.push(options.setpriv.binary, '--reuid', id, '--regid', id, '--clear-groups', '--');
  }
  return [...argv, ...sandbox];
}

/** The same sandbox running `true`: measures whether a host uid can set it up (every bind readable, user namespaces allowed). */
export function probeArgv(options: LaunchOptions, bwrap: readonly string[]): string[] {
  const argv = launchArgv({ ...options, cgroupProcs: [], rlimits: [] }, bwrap);
  const end = argv.lastIndexOf('--');
  return [...argv.slice(0, end), '--', '/usr/bin/true'];
}
