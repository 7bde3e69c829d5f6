import { spawn } from 'node:child_process';
import { chmod, lstat, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../../errors.ts';
import {
  bwrapArgs,
  etcFiles,
  type LaunchOptions,
  type LaunchStage,
  probeArgv,
  type SandboxLayout,
  type SandboxOptions,
  STAGE_MOUNT_POINTS,
  sandboxHostUid,
  stageFstab,
  stageLayout,
} from './bwrap-args.ts';
import type { InstanceSpec } from './driver.ts';
import { hostDirOf } from './host-sockets.ts';
import type { SandboxHost } from './sandbox-host.ts';
import { chownTree, emptyDir } from './sandbox-process.ts';
import { IMAGE_NAME, prepareVolumeImage, type VolumeSupport } from './volume-image.ts';

// An instance's directory, made ready for a start:
//   <instances>/<agent id>/          root, 0711 (traversable, not listable)
//     etc/passwd, group, hosts …     root, 0644, bound read-only at /etc/…
//     volume.ext4                    root, 0600: the volume's image, at /data, where the host has them
//     volume/                        otherwise the volume, at /data (the instance's host uid, 0700);
//                                    beside an image, empty (root, 0700)
//     host/                          the driver's, 0711, emptied: the host's sockets (host-sockets.ts);
//                                    never bound into the sandbox, which sees only
//                                    host/egress.sock, read-only, at /run/enclave/egress.sock
//     output.log                     root, 0600, never seen from inside
//     stage.fstab                    root, 0600: the launcher's mounts (a root worker), never seen from inside
// and the host uid decided. A root worker gives every instance a host uid of
// its own (sandboxHostUid) and never runs one as root: the launcher, still
// root, stages every bind source in a mount namespace of its own
// (LaunchStage), so that uid needs no access to any host path (a node
// binary under /root, a data directory of mode 0700). A worker that is not
// root runs instances as itself.

export type InstanceDirErrorCode = 'host_uid_unavailable' | 'volume_unmountable' | 'host_dir_untrusted';

/** Messages reach the agent's page: they name no host path. */
export class InstanceDirError extends AppError<InstanceDirErrorCode> {
  constructor(code: InstanceDirErrorCode, message: string) {
    super(code, message);
    this.name = 'InstanceDirError';
  }
}

export interface PreparedInstance {
  /** The sandbox's layout as bubblewrap sees it (staged paths on a root worker). */
  readonly layout: SandboxLayout;
  /** The instance's host directory (host-sockets.ts), on the host. */
  readonly hostDir: string;
  readonly options: SandboxOptions;
  /** The host uid the sandbox runs as: its own on a root worker, else the worker's. */
  readonly uid: number;
  /** What the launcher sets up as root before it drops to `uid`; undefined on a worker that is not root. */
  readonly stage: LaunchStage | undefined;
  /** The volume is an image of its own, a hard limit; otherwise it is a plain directory, measured. */
  readonly volumeImage: boolean;
}

/**
 * Where every launcher mounts its stage, each in its own mount namespace
 * over the same empty mount points (STAGE_MOUNT_POINTS), so one directory
 * serves them all and on the host nothing is ever mounted there. Not
 * under the data directory: the instance's uid must reach it from /, and
 * the data directory may be 0700 (or under /root). Under /run, which only
 * root may write, so no one can plant it first.
 */
export const STAGE_DIR = '/run/enclave-stage';

async function ensureStageDir(): Promise<string> {
  const parent = await lstat(path.dirname(STAGE_DIR)).catch(() => undefined);
  if (parent === undefined) await mkdir(path.dirname(STAGE_DIR), { mode: 0o755 });
  const run = await lstat(path.dirname(STAGE_DIR));
  if (!run.isDirectory() || run.uid !== 0 || (run.mode & 0o022) !== 0) {
    throw new InstanceDirError(
      'host_uid_unavailable',
      "the host's run directory is not root's alone: the sandbox cannot be staged",
    );
  }
  await mkdir(STAGE_DIR, { mode: 0o711 }).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EEXIST') throw error;
  });
  const stage = await lstat(STAGE_DIR);
  if (!stage.isDirectory() || stage.uid !== 0) {
    throw new InstanceDirError(
      'host_uid_unavailable',
      'the stage directory is not root’s: the sandbox cannot be staged',
    );
  }
  await chmod(STAGE_DIR, 0o711);
  // Each point is checked on its own (they are independent), all at once: this is on every start.
  await Promise.all(
    STAGE_MOUNT_POINTS.map(async (point) => {
      const file = path.join(STAGE_DIR, point.name);
      let found = await lstat(file).catch(() => undefined);
      if (found === undefined) {
        if (point.kind === 'dir') await mkdir(file, { mode: 0o755 });
        else await writeFile(file, '', { mode: 0o644, flag: 'wx' });
        found = await lstat(file);
      }
      const kindOk = point.kind === 'dir' ? found.isDirectory() : found.isFile();
      if (!kindOk || found.uid !== 0) {
        throw new InstanceDirError(
          'host_uid_unavailable',
          'a mount point of the stage directory is not root’s: the sandbox cannot be staged',
        );
      }
    }),
  );
  return STAGE_DIR;
}

/** /tmp and /dev/shm are tmpfs, which is memory: sized from the memory limit. */
export function sandboxOptions(spec: InstanceSpec, host: SandboxHost): SandboxOptions {
  // Together at most 3/4 of the memory limit (templates allow 32 MiB and up: /tmp 16, /dev/shm 8).
  return {
    tmpMb: Math.max(1, Math.min(256, Math.floor(spec.limits.memoryMb / 2))),
    shmMb: Math.max(1, Math.min(64, Math.floor(spec.limits.memoryMb / 4))),
    disableUserns: host.disableUserns,
    seccomp: host.seccomp.ok,
  };
}

/** The agent id is checked by the driver (one safe path segment) before it names a directory here. */
export async function prepareInstanceDir(
  instancesDir: string,
  spec: InstanceSpec,
  host: SandboxHost,
  volumes: VolumeSupport,
): Promise<PreparedInstance> {
  const dir = path.join(instancesDir, spec.agentId);
  const layout: SandboxLayout = {
    ...host.shared,
    templateDir: spec.templateDir,
    volumeDir: path.join(dir, 'volume'),
    egressSocket: path.join(hostDirOf(instancesDir, spec.agentId), 'egress.sock'),
    gatewaySocket: spec.modelGateway
      ? path.join(hostDirOf(instancesDir, spec.agentId), 'gateway.sock')
      : undefined,
    etcDir: path.join(dir, 'etc'),
  };
  const hostDir = hostDirOf(instancesDir, spec.agentId);
  const options = sandboxOptions(spec, host);
  const setpriv = host.tools.setpriv;
  const unshare = host.tools.unshare;
  if (host.root && (setpriv === undefined || unshare === undefined)) {
    throw new InstanceDirError(
      'host_uid_unavailable',
      'this host lacks setpriv or unshare (util-linux): an instance never runs as host root',
    );
  }
  await mkdir(dir, { recursive: true, mode: 0o711 });
  // A run/ of an earlier version, which the sandbox could write, goes unfollowed; nothing of it runs now.
  await rm(path.join(dir, 'run'), { recursive: true, force: true });
  await mkdir(layout.etcDir, { recursive: true, mode: 0o755 });
  await mkdir(hostDir, { recursive: true, mode: 0o711 });
  const driverUid = process.getuid?.() ?? 0;
  for (const owned of [dir, hostDir]) {
    const stat = await lstat(owned);
    if (!stat.isDirectory() || stat.uid !== driverUid) {
      throw new InstanceDirError('host_dir_untrusted', 'an instance directory is not the driver’s own');
    }
    await chmod(owned, 0o711);
  }
  // Whatever a previous run left in host/ goes before anything is created there.
  await emptyDir(hostDir);
  await Promise.all(
    Object.entries(etcFiles()).map(([name, text]) =>
      writeFile(path.join(layout.etcDir, name), text, { mode: 0o644 }),
    ),
  );
  const uid = host.root ? sandboxHostUid(spec.agentId) : (process.getuid?.() ?? 0);
  let image: string | undefined;
  if (volumes.images) {
    image = await prepareVolumeImage(volumes.tools, dir, spec.limits.volumeMb, uid);
  } else {
    if ((await lstat(path.join(dir, IMAGE_NAME)).catch(() => undefined)) !== undefined) {
      throw new InstanceDirError(
        'volume_unmountable',
        'the volume is an image, and this host cannot mount volume images now',
      );
    }
    await mkdir(layout.volumeDir, { recursive: true, mode: 0o700 });
    // A volume of another uid changes hands, links not followed; nothing runs in it now.
    if ((await stat(layout.volumeDir)).uid !== uid) await chownTree(layout.volumeDir, uid);
  }
  if (!host.root || setpriv === undefined || unshare === undefined) {
    return {
      layout,
      hostDir,
      options,
      uid,
      stage: undefined,
      volumeImage: image !== undefined,
    };
  }
  const stageDir = await ensureStageDir();
  const staged = stageLayout(layout, stageDir, image !== undefined);
  const fstab = path.join(dir, 'stage.fstab');
  await writeFile(fstab, stageFstab(stageDir, staged.binds, image), { mode: 0o600 });
  return {
    layout: staged.layout,
    hostDir,
    options,
    uid,
    stage: { unshare, fstab },
    volumeImage: image !== undefined,
  };
}

export type SandboxProbe = { readonly ok: true } | { readonly ok: false; readonly reason: string };

/**
 * Sets a prepared instance's sandbox up exactly as a start would (stage,
 * host uid, binds) and runs `true` in it. It fails where user namespaces
 * are off for that uid, or a bind cannot be made.
 */
export async function probeSandbox(host: SandboxHost, prepared: PreparedInstance): Promise<SandboxProbe> {
  const options: LaunchOptions = {
    shell: host.tools.shell,
    cgroupProcs: [],
    rlimits: [],
    prlimit: host.tools.prlimit,
    stage: prepared.stage,
    setpriv:
      prepared.stage === undefined || host.tools.setpriv === undefined
        ? undefined
        : { binary: host.tools.setpriv, uid: prepared.uid },
    bwrap: host.tools.bwrap,
    starter: false,
    launcher: host.native.ok ? host.native.launcher : undefined,
  };
  // The probe measures binds and uids: it has no seccomp program on fd 8 to load.
  const sandboxArgs = bwrapArgs(prepared.layout, { ...prepared.options, seccomp: false });
  const [command, ...args] = probeArgv(options, sandboxArgs);
  const result = await new Promise<{ code: number | null; output: string }>((resolve) => {
    // bwrap writes its info to fd 5 (INFO_FD): give it a pipe there.
    const child = spawn(command as string, args, {
      stdio: ['ignore', 'ignore', 'pipe', 'ignore', 'ignore', 'pipe'],
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
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
