import { chmod, chown, lstat, mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  bwrapArgs,
  etcFiles,
  type SandboxLayout,
  type SandboxOptions,
  sandboxHostUid,
} from './bwrap-args.ts';
import type { InstanceSpec } from './driver.ts';
import { hostDirOf } from './host-sockets.ts';
import { probeHostUid, type SandboxHost } from './sandbox-host.ts';
import { chownTree, emptyDir } from './sandbox-process.ts';

// An instance's directory, made ready for a start:
//   <instances>/<agent id>/          the driver's uid, 0711 (traversable, not listable)
//     etc/passwd, group, hosts …     the driver's, 0644, bound read-only at /etc/…
//     volume/                        the instance's host uid, 0700, at /data
//     host/                          the driver's, 0711: the host's sockets (host-sockets.ts);
//                                    never bound into the sandbox, which sees only
//                                    host/egress.sock, read-only, at /run/enclave/egress.sock
//     output.log                     the driver's, 0600, never seen from inside
// and the host uid decided: the instance's own (sandboxHostUid) when a
// sandbox can be set up as that uid, measured by probeHostUid; otherwise
// root without capabilities, with the reason.

export interface PreparedInstance {
  readonly layout: SandboxLayout;
  readonly options: SandboxOptions;
  /** The host uid the sandbox runs as: its own, 0 (root-mapped), or the driver's when it is not root. */
  readonly uid: number;
  /** Why the instance runs root-mapped, when it does on a root driver. */
  readonly fallback: string | undefined;
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

/**
 * Makes the instance's directories, with `host/` the driver's own and
 * emptied, and returns their layout. The agent id is checked by the driver
 * (one safe path segment) before it names a directory here. Nothing of the
 * instance runs while this runs: whatever a previous run left (a `run/` of
 * an earlier version, which the sandbox could write) goes unfollowed.
 */
export async function makeInstanceDirs(
  instancesDir: string,
  spec: InstanceSpec,
  host: SandboxHost,
): Promise<SandboxLayout> {
  const dir = path.join(instancesDir, spec.agentId);
  const layout: SandboxLayout = {
    ...host.shared,
    templateDir: spec.templateDir,
    volumeDir: path.join(dir, 'volume'),
    hostDir: hostDirOf(instancesDir, spec.agentId),
    etcDir: path.join(dir, 'etc'),
  };
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await rm(path.join(dir, 'run'), { recursive: true, force: true });
  await mkdir(layout.etcDir, { recursive: true, mode: 0o755 });
  await mkdir(layout.volumeDir, { recursive: true, mode: 0o700 });
  await mkdir(layout.hostDir, { recursive: true, mode: 0o711 });
  const driverUid = process.getuid?.() ?? 0;
  for (const owned of [dir, layout.hostDir]) {
    const stat = await lstat(owned);
    if (!stat.isDirectory() || stat.uid !== driverUid) {
      throw new Error('an instance directory is not the driver’s own');
    }
    await chmod(owned, 0o711);
  }
  await emptyDir(layout.hostDir);
  for (const [name, text] of Object.entries(etcFiles())) {
    await writeFile(path.join(layout.etcDir, name), text, { mode: 0o644 });
  }
  return layout;
}

/** Decides the instance's host uid (once the layout's bind sources all exist) and gives it its volume. */
export async function prepareInstanceUid(
  instancesDir: string,
  spec: InstanceSpec,
  host: SandboxHost,
  layout: SandboxLayout,
): Promise<PreparedInstance> {
  const options = sandboxOptions(spec, host);
  const dir = path.join(instancesDir, spec.agentId);
  let uid = process.getuid?.() ?? 0;
  let fallback: string | undefined;
  if (host.root) {
    uid = sandboxHostUid(spec.agentId);
    // Traversal for that uid: the directories above stay root's and unlistable.
    await chmod(instancesDir, 0o711);
    await chmod(dir, 0o711);
    await chown(layout.volumeDir, uid, uid);
    // The probe measures binds and uids; it has no seccomp program on fd 8 to load.
    const probe = await probeHostUid(host, bwrapArgs(layout, { ...options, seccomp: false }), uid);
    if (!probe.ok) {
      fallback = probe.reason;
      uid = 0;
    }
  }
  // A volume that ran under the other mode changes hands, links not followed; nothing runs in it now.
  if ((await stat(layout.volumeDir)).uid !== uid) await chownTree(layout.volumeDir, uid);
  return { layout, options, uid, fallback };
}
