import type { Duplex } from 'node:stream';

// The driver's side of the fds it hands the sandbox (bwrap-args.ts):
//   fd 3  the config frame: the supervisor's config and the agent's argv and
//         environment, secrets among them, written from Buffers
//         (configFrame), never a string, argv, env or file;
//   fd 4  the JSON-lines control channel both ways (createControlChannel);
//   fd 5  bubblewrap's --info-fd, which names the sandbox init's host pid.
// The supervisor shares its uid with the agent, so everything read on fd 4
// is untrusted input from the instance: lines are size-capped, fields are
// type-checked, and text that reaches an owner (a reason) is cut to
// printable characters and a bounded length.

export interface AgentExitReport {
  readonly code: number | null;
  readonly signal: string | null;
}

export interface ControlChannel {
  /** The supervisor has started (bwrap set the sandbox up). */
  readonly hello: boolean;
  /** Resolves once the bridges listen and the agent has been spawned. */
  readonly listening: Promise<void>;
  /** Resolves once the supervisor says the agent's port accepts connections (a hint: the driver probes it). */
  readonly agentListening: Promise<void>;
  /** Resolves once the start-time support server is up (with its host key) or has failed. */
  readonly supportSettled: Promise<SupportAnswer>;
  /** Why the agent could not be started (command not found …), as the supervisor said. */
  readonly agentError: string | undefined;
  readonly agentExit: AgentExitReport | undefined;
  /** Turns support SSH on (key) or off (undefined) and waits for the supervisor's answer. */
  support(key: string | undefined, timeoutMs: number): Promise<SupportAnswer>;
  close(): void;
}

const MAX_LINE = 64 * 1024;
const MAX_REASON = 200;

/** Printable text of bounded length: the attacker controls the supervisor's words. */
export function cleanReason(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const text = value.replace(/[^\x20-\x7e]/g, '?').trim();
  return text === '' ? undefined : text.slice(0, MAX_REASON);
}

/** The supervisor's answer to a support command: an error, or (turned on) the host key line it reported, unchecked. */
export type SupportAnswer = { readonly error?: string; readonly hostKey?: unknown };

export function createControlChannel(stream: Duplex): ControlChannel {
  let resolveListening: () => void = () => undefined;
  let resolveAgentListening: () => void = () => undefined;
  let resolveSupport: (answer: SupportAnswer) => void = () => undefined;
  const listening = new Promise<void>((resolve) => {
    resolveListening = resolve;
  });
  const agentListening = new Promise<void>((resolve) => {
    resolveAgentListening = resolve;
  });
  const supportSettled = new Promise<SupportAnswer>((resolve) => {
    resolveSupport = resolve;
  });
  const waiting = new Map<number, (answer: SupportAnswer) => void>();
  let nextId = 1;
  let pending = '';
  let closed = false;

  const channel = {
    hello: false,
    listening,
    agentListening,
    supportSettled,
    agentError: undefined as string | undefined,
    agentExit: undefined as AgentExitReport | undefined,
    support(key: string | undefined, timeoutMs: number): Promise<SupportAnswer> {
      if (closed) return Promise.resolve({ error: 'the instance has ended' });
      const id = nextId++;
      return new Promise<SupportAnswer>((resolve) => {
        const timer = setTimeout(() => answer({ error: 'the supervisor did not answer' }), timeoutMs);
        const answer = (result: SupportAnswer) => {
          clearTimeout(timer);
          waiting.delete(id);
          resolve(result);
        };
        waiting.set(id, answer);
        stream.write(`${JSON.stringify({ id, cmd: 'support', key: key ?? null })}\n`);
      });
    },
    close() {
      if (closed) return;
      closed = true;
      for (const answer of [...waiting.values()]) answer({ error: 'the instance has ended' });
      resolveSupport({ error: 'the instance has ended' });
      stream.destroy();
    },
  };

  const handle = (line: string) => {
    let event: Record<string, unknown>;
    try {
      event = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if (typeof event !== 'object' || event === null) return;
    switch (event.event) {
      case 'hello':
        channel.hello = true;
        break;
      case 'listening':
        resolveListening();
        break;
      case 'agent-listening':
        resolveAgentListening();
        break;
      case 'agent-error':
        channel.agentError ??= cleanReason(event.reason);
        break;
      case 'agent-exit': {
        const code = typeof event.code === 'number' && Number.isInteger(event.code) ? event.code : null;
        const signal =
          typeof event.signal === 'string' && /^SIG[A-Z0-9]{1,10}$/.test(event.signal) ? event.signal : null;
        channel.agentExit ??= { code: code === null && signal === null ? 1 : code, signal };
        break;
      }
      case 'support': {
        const error = cleanReason(event.error);
        const result: SupportAnswer =
          error !== undefined ? { error } : event.on === true ? { hostKey: event.hostKey } : {};
        if (event.id === 0) resolveSupport(result);
        const answer = typeof event.id === 'number' ? waiting.get(event.id) : undefined;
        answer?.(result);
        break;
      }
      default:
        break;
    }
  };

  stream.on('error', () => undefined);
  stream.on('data', (chunk: Buffer) => {
    pending += chunk.toString('utf8');
    let newline = pending.indexOf('\n');
    while (newline !== -1) {
      handle(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      newline = pending.indexOf('\n');
    }
    if (pending.length > MAX_LINE) pending = '';
  });
  stream.on('close', () => channel.close());
  return channel;
}

/** What the starter (or the supervisor) runs: the agent's argv and environment, and the loopback ports that listen first. */
export interface AgentLaunch {
  readonly argv: readonly string[];
  /** NAME and value: the secrets' values are the caller's Buffers. */
  readonly env: readonly (readonly [string, Buffer])[];
  readonly ports: readonly number[];
}

/**
 * The supervisor's config and the agent's launch in one frame (starter.c
 * and supervisor.mjs read it): u32 length + JSON; u32 count + the argv;
 * u32 count + the environment as "NAME=VALUE"; u32 count + the ports, u32
 * each. A string is u32 length + its bytes; lengths are big-endian. The
 * caller zeroes the frame once written: it holds the secrets.
 */
export function configFrame(config: object, launch: AgentLaunch): Buffer {
  const json = Buffer.from(JSON.stringify(config), 'utf8');
  const argv = launch.argv.map((arg) => Buffer.from(arg, 'utf8'));
  const env = launch.env.map(([name, value]) => [Buffer.from(`${name}=`, 'utf8'), value] as const);
  let size = 4 + json.length + 4 + 4 + 4 + 4 * launch.ports.length;
  for (const arg of argv) size += 4 + arg.length;
  for (const [name, value] of env) size += 4 + name.length + value.length;
  const frame = Buffer.alloc(size); // its own memory, not the shared pool: zeroed on its own
  let offset = frame.writeUInt32BE(json.length, 0);
  offset += json.copy(frame, offset);
  offset = frame.writeUInt32BE(argv.length, offset);
  for (const arg of argv) {
    offset = frame.writeUInt32BE(arg.length, offset);
    offset += arg.copy(frame, offset);
  }
  offset = frame.writeUInt32BE(env.length, offset);
  for (const [name, value] of env) {
    offset = frame.writeUInt32BE(name.length + value.length, offset);
    offset += name.copy(frame, offset);
    offset += value.copy(frame, offset);
  }
  offset = frame.writeUInt32BE(launch.ports.length, offset);
  for (const port of launch.ports) offset = frame.writeUInt32BE(port, offset);
  return frame;
}

/** bwrap's --info-fd: its JSON names the host pid of the sandbox's init (bwrap writes it, not the sandbox). */
export function readInfo(stream: Duplex, onPid: (pid: number) => void): void {
  let text = '';
  let found = false;
  stream.on('error', () => undefined);
  stream.on('data', (chunk: Buffer) => {
    if (found || text.length > 64 * 1024) return;
    text += chunk.toString('utf8');
    const pid = /"child-pid":\s*(\d+)/.exec(text)?.[1];
    if (pid === undefined) return;
    found = true;
    onPid(Number(pid));
  });
}
