import type { Socket } from 'node:net';
import net from 'node:net';
import path from 'node:path';
import {
  connectHostSocket,
  listenHostSocket,
  removeHostFile,
  removeHostSocket,
  writeHostFile,
} from './host-sockets.ts';

// The host's side of support SSH (AGT-5). While an instance's owner allows
// support, the driver listens on host/support.sock (mode 0600: the operator's
// CLI) and relays each connection to the supervisor's SSH server on
// host/support-agent.sock, and publishes the instance's host key, as the
// supervisor reported it, in host/support.hostkey.pub for the CLI to pin.
// Turning support off closes the listener and cuts every relayed connection
// here, on the host: a session ends at once, whatever the sandbox does.

export const SUPPORT_SOCKET = 'support.sock';
export const SUPPORT_AGENT_SOCKET = 'support-agent.sock';
export const SUPPORT_HOST_KEY = 'support.hostkey.pub';

/** An OpenSSH Ed25519 public key line as the supervisor reports it (untrusted input). */
const HOST_KEY_LINE = /^ssh-ed25519 [A-Za-z0-9+/]{60,100}={0,2}$/;

export function isHostKeyLine(value: unknown): value is string {
  return typeof value === 'string' && HOST_KEY_LINE.test(value);
}

export interface SupportRelay {
  /** The host key line the relay publishes. */
  readonly hostKey: string;
  /** Closes the listener, cuts every open session, removes the socket and the host key file. */
  close(): Promise<void>;
}

export async function openSupportRelay(hostDir: string, hostKey: string): Promise<SupportRelay> {
  if (!isHostKeyLine(hostKey)) throw new Error('the instance reported a malformed host key');
  const open = new Set<Socket>();
  let closed = false;
  const agentSocket = path.join(hostDir, SUPPORT_AGENT_SOCKET);
  const server = net.createServer((client) => {
    open.add(client);
    client.on('error', () => undefined);
    client.once('close', () => open.delete(client));
    connectHostSocket(agentSocket).then(
      (upstream) => {
        open.add(upstream);
        upstream.on('error', () => undefined);
        upstream.once('close', () => {
          open.delete(upstream);
          client.destroy();
        });
        client.once('close', () => upstream.destroy());
        if (closed || client.destroyed) {
          upstream.destroy();
          return;
        }
        client.pipe(upstream);
        upstream.pipe(client);
      },
      () => client.destroy(),
    );
  });
  await writeHostFile(hostDir, SUPPORT_HOST_KEY, `${hostKey}\n`, 0o644);
  const listener = await listenHostSocket(hostDir, SUPPORT_SOCKET, 0o600, server);
  return {
    hostKey,
    async close() {
      if (closed) return;
      closed = true;
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of open) socket.destroy();
      await removeHostSocket(listener.path);
      await removeHostFile(hostDir, SUPPORT_HOST_KEY);
      await stopped;
    },
  };
}
