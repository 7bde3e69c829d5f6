import { chmod, chown, mkdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  bwrapArgs,
  etcFiles,
  type SandboxLayout,
  type SandboxOptions,
  sandboxHostUid,
} from './bwrap-args.ts';
import type { InstanceSpec } from './driver.ts';
import { probeHostUid, type SandboxHost } from './sandbox-host.ts';
import { chownTree, emptyDir } from './sandbox-process.ts';

// An instance's directory, made ready for a start:
//   <instances>/<agent id>/          root, 0711 (traversable, not listable)
//     etc/passwd, group, hosts …     root, 0644, bound read-only at /etc/…
//     volume/                        the instance's host uid, 0700, at /data
//     run/                           the instance's host uid, 0700, at /run/enclave (emptied)
//     output.log                     root, 0600, never seen from inside
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

/** The agent id is checked by the driver (one safe path segment) before it names a directory here. */
export async function prepareInstanceDir(
  instancesDir: string,
  spec: InstanceSpec,
  host: SandboxHost,
): Promise<PreparedInstance> {
  const dir = path.join(instancesDir, spec.agentId);
  const layout: SandboxLayout = {
    ...host.shared,
    templateDir: spec.templateDir,
    volumeDir: path.join(dir, 'volume'),
    runDir: path.join(dir, 'run'),
    etcDir: path.join(dir, 'etc'),
  };
  const options = sandboxOptions(spec, host);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  await mkdir(layout.etcDir, { recursive: true, mode: 0o755 });
  await mkdir(layout.volumeDir, { recursive: true, mode: 0o700 });
  await mkdir(layout.runDir, { recursive: true, mode: 0o700 });
  // Whatever a previous run left in run/ (sockets, links) goes before anything is created there.
  await emptyDir(layout.runDir);
  for (const [name, text] of Object.entries(etcFiles())) {
    await writeFile(path.join(layout.etcDir, name), text, { mode: 0o644 });
  }
  let uid = process.getuid?.() ?? 0;
  let fallback: string | undefined;
  if (host.root) {
    uid = sandboxHostUid(spec.agentId);
    // Traversal for that uid: the directories above stay root's and unlistable.
    await chmod(instancesDir, 0o711);
    await chmod(dir, 0o711);
    await chown(layout.runDir, uid, uid);
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
  await chown(layout.runDir, uid, uid);
  return { layout, options, uid, fallback };
}
