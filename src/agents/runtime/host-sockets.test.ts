import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rename, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  connectHostSocket,
  HostSocketError,
  listenHostSocket,
  readHostFile,
  removeHostSocket,
  writeHostFile,
} from './host-sockets.ts';

// The host's sockets (host-sockets.ts): bound and connected to only through
// a checked descriptor of a directory of the host's own, whatever the length
// of the path to it, and never through a link or a socket someone else put
// in place.

async function hostDir(depth = 1): Promise<string> {
  let dir = await mkdtemp(path.join(tmpdir(), 'enclave-host-sockets-'));
  // A long data directory: well past the 108 bytes a Unix socket path may have.
  for (let i = 0; i < depth; i++) dir = path.join(dir, `${'d'.repeat(60)}${i}`);
  await mkdir(dir, { recursive: true, mode: 0o711 });
  return dir;
}

function echoServer(): net.Server {
  return net.createServer((socket) => socket.end('host'));
}

async function read(socket: net.Socket): Promise<string> {
  let text = '';
  for await (const chunk of socket) text += String(chunk);
  return text;
}

describe('AGT-2: host sockets', () => {
  test('AGT-2: a socket in a directory whose path is 250 bytes long is bound and reached (its path is short through the descriptor)', async () => {
    const dir = await hostDir(4);
    assert.ok(Buffer.byteLength(path.join(dir, 'ingress.sock')) > 250);
    const listener = await listenHostSocket(dir, 'ingress.sock', 0o600, echoServer());
    assert.equal(await read(await connectHostSocket(listener.path)), 'host');
    listener.server.close();
    await removeHostSocket(listener.path);
    await assert.rejects(connectHostSocket(listener.path), { code: 'ENOENT' });
  });

  test('AGT-2, AGT-3: another socket renamed into place, a link, or a swapped directory is refused, never connected to', async () => {
    const dir = await hostDir();
    const listener = await listenHostSocket(dir, 'ingress.sock', 0o600, echoServer());
    let reachedPlanted = 0;
    const planted = net.createServer((socket) => {
      reachedPlanted += 1;
      socket.destroy();
    });
    const other = path.join(dir, 'planted.sock');
    await new Promise<void>((resolve) => planted.listen(other, resolve));
    await rename(other, listener.path);
    await assert.rejects(connectHostSocket(listener.path), HostSocketError);

    const linked = path.join(dir, 'linked.sock');
    await symlink(listener.path, linked);
    await assert.rejects(connectHostSocket(linked), HostSocketError);

    const victim = await hostDir();
    const victimListener = await listenHostSocket(victim, 'ingress.sock', 0o600, echoServer());
    const swapped = path.join(path.dirname(dir), 'swapped');
    await symlink(victim, swapped);
    await assert.rejects(connectHostSocket(path.join(swapped, 'ingress.sock')), HostSocketError);
    assert.equal(reachedPlanted, 0);
    for (const server of [listener.server, victimListener.server, planted]) server.close();
  });

  test('AGT-2: a directory others may write to, or a plain file in place of a socket, is refused', async () => {
    const dir = await hostDir();
    await writeFile(path.join(dir, 'ingress.sock'), 'not a socket');
    await assert.rejects(connectHostSocket(path.join(dir, 'ingress.sock')), HostSocketError);
    await chmod(dir, 0o777);
    await assert.rejects(listenHostSocket(dir, 'egress.sock', 0o666), HostSocketError);
    await assert.rejects(connectHostSocket(path.join(dir, 'ingress.sock')), HostSocketError);
  });

  test('AGT-5: host files are written whole and read without following a link', async () => {
    const dir = await hostDir();
    await writeHostFile(dir, 'support.hostkey.pub', 'ssh-ed25519 AAAA\n', 0o644);
    assert.equal(await readHostFile(dir, 'support.hostkey.pub'), 'ssh-ed25519 AAAA\n');
    const secret = path.join(await hostDir(), 'secret');
    await writeFile(secret, 'host secret');
    await symlink(secret, path.join(dir, 'linked.pub'));
    assert.equal(await readHostFile(dir, 'linked.pub'), undefined);
    await assert.rejects(readHostFile(dir, '../secret'), HostSocketError);
  });
});
