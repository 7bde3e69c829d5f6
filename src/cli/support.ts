import { lstat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { userInfo } from 'node:os';
import path from 'node:path';
import ssh2 from 'ssh2';
import { connectHostSocket, hostDirOf, readHostFile } from '../agents/runtime/host-sockets.ts';
import { SUPPORT_HOST_KEY, SUPPORT_SOCKET } from '../agents/runtime/support-relay.ts';
import { endSupportSession } from '../agents/runtime/support-sessions.ts';
import { appendAuditEvent } from '../audit/append.ts';
import { type Env, loadConfig } from '../config.ts';
import { type Database, openDatabase } from '../db/database.ts';
import { isUuid, serviceQuery } from '../db/tenant.ts';
import { loadSupportKey } from '../operator-secrets/support-key.ts';
import type { Io } from './main.ts';
import { shown, UsageError } from './usage-error.ts';

// `enclave support ssh|proxy AGENT` (AGT-5): the operator's one way into an
// instance, only while its owner allows support. Every session is recorded
// as it starts and ends (support_sessions and the tenant's audit chain), by
// the operator's account name on this host.

/** isUuid without its type guard: here the value is a string either way. */
const isAgentId = (value: string): boolean => isUuid(value);

type SupportCommand = {
  readonly mode: 'ssh' | 'proxy';
  readonly agent: string;
  readonly command: readonly string[];
};

export function parseSupportCommand(rest: readonly string[]): SupportCommand {
  const [mode, agent, ...command]: (string | undefined)[] = [...rest];
  if (mode !== 'ssh' && mode !== 'proxy') {
    const quoted = mode === undefined ? undefined : shown(mode);
    throw new UsageError(
      quoted === undefined
        ? '"support" needs ssh or proxy'
        : `unknown support action ${quoted} (use ssh or proxy)`,
    );
  }
  if (agent === undefined) throw new UsageError(`"support ${mode}" needs the agent's handle or id`);
  const handleOrId = isAgentId(agent) || /^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$/.test(agent);
  if (!handleOrId) throw new UsageError(`${shown(agent)} is not an agent handle or id`);
  if (mode === 'proxy' && command.length > 0) throw new UsageError('"support proxy" takes no command');
  return { mode, agent, command: command.filter((part): part is string => part !== undefined) };
}

interface Located {
  readonly tenantId: string;
  readonly agentId: string;
}

class SupportRefused extends Error {}

async function locate(db: Database, agent: string): Promise<Located> {
  const id = isUuid(agent) ? agent.toLowerCase() : null;
  const [row] = await db.app<{ tenant_id: string; agent_id: string }[]>`
    select tenant_id, agent_id from enclave.agent_locate(${agent}, ${id}::uuid)`;
  if (row === undefined) throw new SupportRefused(`no agent has the handle or id ${agent}`);
  return { tenantId: row.tenant_id, agentId: row.agent_id };
}

/** Checks the owner's consent and the instance, and records the session's start in the same transaction. */
async function open(db: Database, where: Located, operator: string): Promise<string> {
  return serviceQuery(db.app, { tenantId: where.tenantId, reason: 'support: open a session' }, async (tx) => {
    const [agent] = await tx<{ support_access: boolean; state: string | null }[]>`
      select a.support_access, i.state from agents a left join agent_instances i on i.agent_id = a.id
      where a.id = ${where.agentId}::uuid`;
    if (agent === undefined) throw new SupportRefused('the agent no longer exists');
    if (!agent.support_access) throw new SupportRefused("the agent's owner has turned support access off");
    if (agent.state !== 'running') throw new SupportRefused('the agent is not running');
    const [session] = await tx<{ id: string }[]>`
      insert into support_sessions (tenant_id, agent_id, operator)
      values (${where.tenantId}::uuid, ${where.agentId}::uuid, ${operator}) returning id`;
    const id = session?.id ?? '';
    await appendAuditEvent(tx, where.tenantId, {
      actor: operator,
      action: 'support.session_started',
      target: `agent:${where.agentId}`,
      data: { session_id: id },
    });
    return id;
  });
}

async function close(db: Database, where: Located, operator: string, sessionId: string): Promise<void> {
  await serviceQuery(db.app, { tenantId: where.tenantId, reason: 'support: close a session' }, (tx) =>
    endSupportSession(tx, where.tenantId, { sessionId, actor: operator, reason: 'closed' }),
  );
}

/**
 * The instance's support socket, checked (host-sockets.ts): in the host
 * directory of the instance, a socket of the uid that runs the instances
 * (the owner of the instances directory), never a link.
 */
async function connectSupport(instancesDir: string, agentId: string): Promise<Socket> {
  const owner = (await lstat(instancesDir).catch(() => undefined))?.uid;
  if (owner === undefined) throw new SupportRefused('no instance of this agent runs on this host');
  try {
    return await connectHostSocket(path.join(hostDirOf(instancesDir, agentId), SUPPORT_SOCKET), owner);
  } catch {
    throw new SupportRefused("the agent's support listener is not answering");
  }
}

async function readHostKey(instancesDir: string, agentId: string): Promise<string> {
  const owner = (await lstat(instancesDir).catch(() => undefined))?.uid;
  const text =
    owner === undefined
      ? undefined
      : await readHostFile(hostDirOf(instancesDir, agentId), SUPPORT_HOST_KEY, owner).catch(() => undefined);
  return text?.trim().split(' ')[1] ?? '';
}

/**
 * Standard input and output ↔ the instance's SSH server, until either side
 * ends. OpenSSH ends its ProxyCommand with SIGHUP when the session is over:
 * that, too, ends the proxy normally, so the session's end is recorded.
 */
function proxy(socket: Socket): Promise<number> {
  return new Promise((resolve) => {
    const signals = ['SIGHUP', 'SIGTERM', 'SIGINT'] as const;
    const finish = (code: number) => {
      for (const signal of signals) process.off(signal, onSignal);
      process.stdin.unpipe(socket);
      process.stdin.destroy();
      socket.destroy();
      resolve(code);
    };
    const onSignal = () => finish(0);
    for (const signal of signals) process.once(signal, onSignal);
    process.stdin.pipe(socket);
    socket.pipe(process.stdout);
    socket.once('close', () => finish(0));
    socket.once('error', () => finish(1));
  });
}

/** An SSH session over the socket: the command's exit status, or the shell's. */
function ssh(
  socket: Socket,
  key: string,
  hostKey: string,
  command: readonly string[],
  io: Io,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    client.on('error', (error) => reject(new SupportRefused(`ssh: ${error.message}`)));
    // Cut from the platform's side (support turned off, the instance stopped): the session is over.
    client.on('close', () => {
      process.stdin.unpipe();
      reject(
        new SupportRefused(
          'the session was closed by the platform (support access off or the instance stopped)',
        ),
      );
    });
    client.on('ready', () => {
      io.err("Connected to the agent; this session is recorded in its owner's audit log.");
      const run = (error: Error | undefined, channel: ssh2.ClientChannel) => {
        if (error !== undefined) {
          client.end();
          reject(new SupportRefused(`ssh: ${error.message}`));
          return;
        }
        process.stdin.pipe(channel);
        channel.pipe(process.stdout);
        channel.stderr.pipe(process.stderr);
        channel.on('exit', (code: number | null) => {
          process.stdin.unpipe(channel);
          client.end();
          resolve(code ?? 1);
        });
      };
      if (command.length > 0) client.exec(command.join(' '), run);
      else client.shell(false, run);
    });
    client.connect({
      sock: socket,
      username: 'support',
      privateKey: key,
      // The instance's host key, made at its start and left beside its socket.
      hostVerifier: (presented: Buffer) => presented.toString('base64') === hostKey,
    });
  });
}

export async function runSupport(rest: readonly string[], env: Env, io: Io): Promise<number> {
  const command = parseSupportCommand(rest);
  const config = loadConfig(env, process.cwd());
  const key = await loadSupportKey(config, env);
  const operator = `operator:${userInfo().username}`;
  const db = await openDatabase(config, env, { appPoolSize: 2, migrate: false });
  try {
    const where = await locate(db, command.agent);
    const hostKey = command.mode === 'ssh' ? await readHostKey(config.instancesDir, where.agentId) : '';
    const sessionId = await open(db, where, operator);
    try {
      const socket = await connectSupport(config.instancesDir, where.agentId);
      return command.mode === 'proxy'
        ? await proxy(socket)
        : await ssh(socket, key.privateKey, hostKey, command.command, io);
    } finally {
      await close(db, where, operator, sessionId);
    }
  } catch (error) {
    if (error instanceof SupportRefused) {
      io.err(`enclave: ${error.message}`);
      return 1;
    }
    throw error;
  } finally {
    await db.close();
  }
}
