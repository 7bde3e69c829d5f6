import { lchown, lstat, readdir, readFile, readlink, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { HostSocketAgent } from './host-sockets.ts';

// Small host-side helpers around a running sandbox: finding its processes
// in /proc, waiting for them to be gone, probing its ingress socket, and
// preparing the directories it binds.

/** The ppid field of /proc/<pid>/stat (after the parenthesised command name, which may hold spaces). */
function parentOf(stat: string): number | undefined {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ppid = Number(fields[1]);
  return Number.isInteger(ppid) ? ppid : undefined;
}

/**
 * The supervisor's host pid: the child of the sandbox's init (bubblewrap's
 * reaper, `sandboxPid` on the host) that is pid 2 in the sandbox. Orphans
 * re-parented to the init are its children too, but never pid 2.
 */
export async function findSupervisorPid(sandboxPid: number): Promise<number | undefined> {
  const entries = await readdir('/proc').catch(() => [] as string[]);
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (parentOf(stat) !== sandboxPid) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    const nspid = /^NSpid:\s+(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/);
    if (nspid?.at(-1) === '2') return Number(entry);
  }
  return undefined;
}

/**
 * Private resident memory (anonymous and shared-memory pages, not the
 * mapped files such as the node binary, which every instance shares) of
 * every process in the sandbox's pid namespace — that of its init,
 * `sandboxPid` — in bytes. /tmp is a size-capped tmpfs besides.
 */
export async function sandboxMemoryBytes(sandboxPid: number): Promise<number> {
  const namespace = await readlink(`/proc/${sandboxPid}/ns/pid`).catch(() => undefined);
  if (namespace === undefined) return 0;
  let total = 0;
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    if ((await readlink(`/proc/${entry}/ns/pid`).catch(() => undefined)) !== namespace) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    for (const field of ['RssAnon', 'RssShmem']) {
      total += Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1] ?? 0) * 1024;
    }
  }
  return total;
}

/** Whether a process is gone (or a zombie: its pid namespace is then torn down and empty). */
async function isGone(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return true;
  return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

/**
 * Waits until the sandbox's init has exited: the kernel kills every other
 * process of its pid namespace and reaps them before the init itself ends.
 */
export async function waitGone(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let delay = 5;
  while (Date.now() < deadline) {
    if (await isGone(pid)) return true;
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 100);
  }
  return isGone(pid);
}

const probeAgent = new HostSocketAgent({ keepAlive: false });

/** One HTTP GET / through the ingress socket (checked: host-sockets.ts): true on any response at all. */
export function probeIngress(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.request(
      {
        socketPath,
        agent: probeAgent,
        path: '/',
        method: 'GET',
        headers: { host: 'localhost', connection: 'close' },
      },
      (response) => {
        response.resume();
        resolve(true);
      },
    );
    request.setTimeout(timeoutMs, () => request.destroy());
    request.once('error', () => resolve(false));
    request.end();
  });
}

/** Empties a directory without following symlinks a previous instance may have left in it. */
export async function emptyDir(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  await Promise.all(names.map((name) => rm(path.join(dir, name), { recursive: true, force: true })));
}

/** Gives a tree to `uid` (lchown: links are not followed). Runs only while no sandbox uses it. */
export async function chownTree(dir: string, uid: number): Promise<void> {
  await lchown(dir, uid, uid);
  const pending = [dir];
  while (pending.length > 0) {
    const current = pending.pop() as string;
    const names = await readdir(current).catch(() => [] as string[]);
    for (const name of names) {
      const file = path.join(current, name);
      const stat = await lstat(file).catch(() => undefined);
      if (stat === undefined) continue;
      await lchown(file, uid, uid).catch(() => undefined);
      if (stat.isDirectory()) pending.push(file);
    }
  }
}
