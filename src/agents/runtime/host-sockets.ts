import { randomBytes } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { chmod, type FileHandle, lstat, open, rename, unlink } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { AppError } from '../../errors.ts';

// The Unix sockets between the host and an instance (AGT-2, AGT-3, AGT-5)
// live in the instance's `host/` directory, which belongs to the driver's
// uid, is never bound into a sandbox and is never writable by one: nothing
// the host binds, connects to or removes there can have been planted by an
// agent. docs/runtime.md ("No host path under an agent's control") lists
// every path the host touches and what keeps each one out of reach.
//
// Every operation goes through an open descriptor of that directory
// (`/proc/self/fd/N/name`), for two reasons: the directory is opened without
// following a link and checked (ours, not group- or world-writable) before
// anything is done in it, and the socket path stays 30-odd bytes long
// whatever the data directory is (a Unix socket path must fit in 108 bytes).
// Before each connect the socket is lstat'ed through the same descriptor:
// it must be a socket, owned by the directory's owner, and, when this
// process created it, the very inode it created.

export type HostSocketErrorCode = 'host_socket_untrusted';

export class HostSocketError extends AppError<HostSocketErrorCode> {
  constructor(message: string) {
    super('host_socket_untrusted', message);
    this.name = 'HostSocketError';
  }
}

/** The host-owned directory of an instance's sockets: `<instances>/<agent id>/host`. */
export const HOST_DIR = 'host';

export function hostDirOf(instancesDir: string, agentId: string): string {
  return path.join(instancesDir, agentId, HOST_DIR);
}

interface SocketIdentity {
  readonly dev: number;
  readonly ino: number;
}

/** Sockets this process bound, by their full path: a connect to one of them must reach that inode. */
const created = new Map<string, SocketIdentity>();

const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
const SOCKET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function checkName(name: string): void {
  if (!SOCKET_NAME.test(name)) throw new HostSocketError('not a host socket name');
}

/**
 * Opens a host directory without following a link in its last component and
 * checks it: a directory of `owner` (default: this process's uid) that
 * nobody else may write to. The caller closes the handle.
 */
export async function openHostDir(dir: string, owner = process.getuid?.() ?? 0): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(dir, DIR_FLAGS);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw Object.assign(new Error('no such instance directory'), { code: 'ENOENT' });
    throw new HostSocketError(`the instance's host directory cannot be opened (${code ?? 'error'})`);
  }
  const stat = await handle.stat();
  if (!stat.isDirectory() || stat.uid !== owner || (stat.mode & 0o022) !== 0) {
    await handle.close();
    throw new HostSocketError("the instance's host directory is not the host's own");
  }
  return handle;
}

/** A short path that names `name` inside the directory `handle` holds open. */
function viaHandle(handle: FileHandle, name: string): string {
  return `/proc/self/fd/${handle.fd}/${name}`;
}

function lstatIn(handle: FileHandle, name: string): Promise<Stats | undefined> {
  return lstat(viaHandle(handle, name)).catch(() => undefined);
}

export interface HostListener {
  readonly server: net.Server;
  /** The listening socket's descriptor, for handing to a sandbox (the host itself closes its server once handed). */
  readonly fd: number;
  readonly path: string;
}

/**
 * Binds a listening socket at `dir/name` (replacing a stale one) with `mode`,
 * and remembers its inode. Bound under a temporary name and renamed into
 * place (over a stale socket, atomically), so that closing this process's
 * copy — Node unlinks the path a server was bound to when it closes — leaves
 * the socket of a sandbox that was handed the descriptor where it is.
 */
export async function listenHostSocket(
  dir: string,
  name: string,
  mode: number,
  server: net.Server = net.createServer(),
): Promise<HostListener> {
  checkName(name);
  const handle = await openHostDir(dir);
  try {
    // Unique: Node unlinks this name (through a descriptor number that may by then name another
    // directory) when the server closes, and nothing else may ever carry it.
    const temporary = `.${name}.${randomBytes(8).toString('hex')}`;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(viaHandle(handle, temporary), () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(viaHandle(handle, temporary), mode);
    await rename(viaHandle(handle, temporary), viaHandle(handle, name));
    const stat = await lstatIn(handle, name);
    if (stat === undefined || !stat.isSocket())
      throw new HostSocketError('the socket vanished after binding');
    const full = path.join(dir, name);
    created.set(full, { dev: stat.dev, ino: stat.ino });
    return { server, fd: serverFd(server), path: full };
  } catch (error) {
    server.close();
    throw error;
  } finally {
    await handle.close();
  }
}

/** The descriptor behind a listening net.Server: Node has no public accessor, and spawn() takes it as a number. */
function serverFd(server: net.Server): number {
  const handle = (server as unknown as { _handle?: { fd?: unknown } })._handle;
  if (typeof handle?.fd !== 'number' || handle.fd < 0)
    throw new HostSocketError('the listener has no descriptor');
  return handle.fd;
}

/** Forgets a socket this process created and removes it (only a socket is removed, never what replaced it). */
export async function removeHostSocket(socketPath: string): Promise<void> {
  created.delete(socketPath);
  let handle: FileHandle;
  try {
    handle = await openHostDir(path.dirname(socketPath));
  } catch {
    return;
  }
  try {
    const name = path.basename(socketPath);
    const stat = await lstatIn(handle, name);
    if (stat?.isSocket() === true) await unlink(viaHandle(handle, name)).catch(() => undefined);
  } finally {
    await handle.close();
  }
}

/**
 * Connects to `socketPath` after checking it: its directory is the host's
 * (see openHostDir; `owner` for a process other than the one that bound
 * it), the path is a socket of that owner, and the inode this process bound
 * there if it bound one. A missing socket rejects with ENOENT, one nobody
 * listens on with ECONNREFUSED, an untrusted one with HostSocketError.
 */
export async function connectHostSocket(socketPath: string, owner?: number): Promise<net.Socket> {
  const name = path.basename(socketPath);
  checkName(name);
  const handle = await openHostDir(path.dirname(socketPath), owner);
  try {
    const stat = await lstatIn(handle, name);
    if (stat === undefined) throw Object.assign(new Error('no socket'), { code: 'ENOENT' });
    const expected = created.get(socketPath);
    const ownerUid = owner ?? process.getuid?.() ?? 0;
    if (!stat.isSocket() || stat.uid !== ownerUid) throw new HostSocketError('not the host’s socket');
    if (expected !== undefined && (expected.dev !== stat.dev || expected.ino !== stat.ino)) {
      throw new HostSocketError('not the socket the host created');
    }
    return await new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect({ path: viaHandle(handle, name) });
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(socket);
      });
      socket.once('error', reject);
    });
  } finally {
    // Not awaited: the caller must have the socket before any further I/O event can reach it
    // (an error with no listener yet would be thrown). The kernel resolved the path at connect().
    void handle.close().catch(() => undefined);
  }
}

/** Writes a small file into a host directory, atomically (temporary name, then rename), links never followed. */
export async function writeHostFile(dir: string, name: string, text: string, mode: number): Promise<void> {
  checkName(name);
  const handle = await openHostDir(dir);
  try {
    const temporary = `.${name}.${randomBytes(8).toString('hex')}`;
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
    const file = await open(viaHandle(handle, temporary), flags, mode);
    try {
      await file.writeFile(text);
    } finally {
      await file.close();
    }
    await rename(viaHandle(handle, temporary), viaHandle(handle, name));
  } finally {
    await handle.close();
  }
}

/** Reads a small file of a host directory (see openHostDir for `owner`), links never followed; undefined when missing. */
export async function readHostFile(dir: string, name: string, owner?: number): Promise<string | undefined> {
  checkName(name);
  const handle = await openHostDir(dir, owner);
  try {
    const file = await open(viaHandle(handle, name), constants.O_RDONLY | constants.O_NOFOLLOW).catch(
      () => undefined,
    );
    if (file === undefined) return undefined;
    try {
      if ((await file.stat()).size > 64 * 1024) return undefined;
      return await file.readFile('utf8');
    } finally {
      await file.close();
    }
  } finally {
    await handle.close();
  }
}

/** Removes a file of a host directory if it is there (a regular file only). */
export async function removeHostFile(dir: string, name: string): Promise<void> {
  checkName(name);
  let handle: FileHandle;
  try {
    handle = await openHostDir(dir);
  } catch {
    return;
  }
  try {
    const stat = await lstatIn(handle, name);
    if (stat?.isFile() === true) await unlink(viaHandle(handle, name)).catch(() => undefined);
  } finally {
    await handle.close();
  }
}

/**
 * An HTTP agent whose connections to `socketPath` go through
 * connectHostSocket's checks (keep-alive pools stay keyed by the path).
 */
export class HostSocketAgent extends http.Agent {
  override createConnection(
    options: http.ClientRequestArgs,
    callback?: (error: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    // With an error, Node's agent never looks at the stream: an unconnected socket stands in for it.
    const done = callback ?? (() => undefined);
    const socketPath = options.socketPath;
    if (socketPath === undefined) {
      process.nextTick(() => done(new HostSocketError('only host sockets'), new net.Socket()));
      return undefined;
    }
    connectHostSocket(socketPath).then(
      (socket) => done(null, socket),
      (error: Error) => done(error, new net.Socket()),
    );
    return undefined;
  }
}
