// The supervisor: run by the host's node binary bound at
// /opt/enclave/bin/node, inside an instance's sandbox (under bubblewrap's
// pid-1 reaper). Plain JavaScript: it runs as is, with no loader.
//
// Where the host built the native starter (native/starter.c), that is the
// sandbox's first process: it starts the agent and this supervisor side by
// side (`--starter`), and fd 3 is its pipe of JSON lines: the config, then
// whether the agent started, then how it exited. Otherwise this is the
// first process: fd 3 carries the driver's frame itself, and the agent is
// started from here once the frame is read.
//
//   fd 3  in: (alone) one framed message from the driver, then EOF
//         (supervisor-channel.ts configFrame): the config, the agent's argv
//         and its environment, secrets among them, which never pass
//         through argv or the environment of anything outside the sandbox.
//   fd 4  both ways, JSON lines: commands from the driver ({"id","cmd":"support","key"}),
//         events to it ({"event":"hello"|"listening"|"agent-listening"|"agent-error"|"agent-exit"|"support"}).
//   fd 6  a listening socket the host bound in its own directory: ingress.
//   fd 7  a listening socket the host bound in its own directory: support SSH,
//         which only the host's relay connects to (AGT-5).
//   fd 9… (under the starter) the loopback listeners it bound, one per
//         outbound bridge, in the config's order.
//
// It bridges ingress connections (fd 6) → 127.0.0.1:<agent port>,
// 127.0.0.1:<proxy port> → /run/enclave/egress.sock (a read-only bind of
// the host's socket) and, for an agent that calls models, 127.0.0.1:<gateway
// port> → /run/enclave/gateway.sock (the agent's environment, decided on the
// host, points the model SDKs there with its own token: AGT-7); serves
// support SSH on fd 7 while support is on (AGT-5); stops the agent on
// SIGTERM and SIGINT (its process group) and exits with the agent's status.
// It creates no file: the sandbox has nowhere to put one that the host would
// read.
//
// Its own start is on the cold start of an instance without the starter:
// it imports only what the agent's start needs, the rest (ssh2,
// node:crypto) when support is turned on.
//
// Everything here shares the agent's uid: the driver treats what this
// process reports as untrusted input from the instance.

import { spawn } from 'node:child_process';
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { constants } from 'node:os';

const EGRESS_SOCKET = '/run/enclave/egress.sock';
const GATEWAY_SOCKET = '/run/enclave/gateway.sock';
const CONFIG_FD = 3;
const CONTROL_FD = 4;
const INGRESS_FD = 6;
const SUPPORT_FD = 7;
const FIRST_LISTEN_FD = 9;
const STARTER = process.argv.includes('--starter');
const MAX_CONFIG_BYTES = 1024 * 1024;
const MAX_CONTROL_LINE = 64 * 1024;
/** After one side of a bridged connection closes, how long the other may take to drain. */
const LINGER_MS = 10_000;
/** How often the agent's port is tried until it accepts (watchAgentPort). */
const PORT_WATCH_MS = 2;

function note(line) {
  process.stderr.write(`[enclave] ${line}\n`);
}

/** fds inherited without close-on-exec (beyond ours) would leak into the agent: close them. */
function closeStrayFds() {
  let fds = [];
  try {
    fds = readdirSync('/proc/self/fd').map(Number);
  } catch {
    return;
  }
  for (const fd of fds) {
    if (!Number.isInteger(fd) || fd <= CONTROL_FD || fd === INGRESS_FD || fd === SUPPORT_FD) continue;
    try {
      const info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
      const flags = Number.parseInt(/^flags:\s+([0-7]+)$/m.exec(info)?.[1] ?? '0', 8);
      if ((flags & 0o2000000) === 0) closeSync(fd);
    } catch {
      // gone already (the directory's own fd)
    }
  }
}

if (!STARTER) closeStrayFds(); // the starter left this process only its own

const control = new net.Socket({ fd: CONTROL_FD, readable: true, writable: true });
control.on('error', () => undefined);

function report(event) {
  if (!control.destroyed) control.write(`${JSON.stringify(event)}\n`);
}

let exiting = false;
/** The agent once started: its pid (and process group), and whether it still runs. */
let agent;
const servers = [];

function shutdown(code) {
  if (exiting) return;
  exiting = true;
  void supportOff();
  for (const server of servers) server.close();
  control.end(() => process.exit(code));
  setTimeout(() => process.exit(code), 1000).unref();
}

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (agent?.running) {
      try {
        process.kill(-agent.pid, signal); // its process group: the agent and what it started
      } catch {
        try {
          process.kill(agent.pid, signal);
        } catch {
          // gone: its exit is on its way
        }
      }
    } else {
      shutdown(128 + constants.signals[signal]);
    }
  });
}
process.on('SIGHUP', () => undefined);

// ---- the config, and the agent's launch (fd 3) ----

/** The driver's frame, read to its EOF (without the starter). */
function readFrame() {
  return new Promise((resolve, reject) => {
    const input = new net.Socket({ fd: CONFIG_FD, readable: true, writable: false });
    const chunks = [];
    let size = 0;
    input.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_CONFIG_BYTES) {
        input.destroy();
        reject(new Error('the config is too large'));
        return;
      }
      chunks.push(chunk);
    });
    input.on('error', reject);
    input.on('end', () => {
      input.destroy();
      const frame = Buffer.concat(chunks);
      for (const chunk of chunks) chunk.fill(0);
      resolve(frame);
    });
  });
}

function parseFrame(frame) {
  let offset = 0;
  const u32 = () => {
    if (offset + 4 > frame.length) throw new Error('the config frame is truncated');
    const value = frame.readUInt32BE(offset);
    offset += 4;
    return value;
  };
  const take = () => {
    const length = u32();
    if (offset + length > frame.length) throw new Error('the config frame is truncated');
    const slice = frame.subarray(offset, offset + length);
    offset += length;
    return slice.toString('utf8');
  };
  const list = () => Array.from({ length: u32() }, take);
  const config = JSON.parse(take());
  const argv = list();
  const env = {};
  for (const entry of list()) {
    const equals = entry.indexOf('=');
    env[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  return { config, argv, env };
}

/**
 * The starter's pipe (fd 3): resolves with the config, its first line; the
 * lines after it say whether the agent started and how it exited.
 */
function readStarter() {
  return new Promise((resolve, reject) => {
    const input = new net.Socket({ fd: CONFIG_FD, readable: true, writable: false });
    let pending = '';
    let config;
    input.on('data', (chunk) => {
      pending += chunk.toString('utf8');
      let newline = pending.indexOf('\n');
      while (newline !== -1) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (config === undefined) {
          try {
            config = JSON.parse(line);
          } catch (error) {
            reject(error);
            return;
          }
          resolve(config);
        } else {
          starterEvent(line, config);
        }
        newline = pending.indexOf('\n');
      }
      if (pending.length > MAX_CONFIG_BYTES) {
        input.destroy();
        reject(new Error('the config is too large'));
      }
    });
    input.on('error', reject);
    // The starter is the agent's parent: without it, nothing is left to supervise.
    input.on('end', () => {
      if (config === undefined) reject(new Error('the starter sent no config'));
      else if (!exiting) shutdown(agent === undefined ? 126 : 1);
    });
  });
}

function starterEvent(line, config) {
  let event;
  try {
    event = JSON.parse(line);
  } catch {
    return;
  }
  if (event.event === 'started') agentStarted(event.pid);
  else if (event.event === 'error') agentFailed(config.program, errnoCode(event.errno));
  else if (event.event === 'exit') {
    const signal =
      event.signal === undefined
        ? null
        : (Object.keys(constants.signals).find((name) => constants.signals[name] === event.signal) ??
          `SIG${event.signal}`);
    agentExited(event.code ?? null, signal);
  }
}

/** ENOENT for 2 …: the name of an errno the starter reports. */
function errnoCode(number) {
  return Object.keys(constants.errno).find((name) => constants.errno[name] === number) ?? `errno ${number}`;
}

// ---- bridges ----

/** Pipes two sockets both ways until both sides are done; an error on either ends both. */
function bridge(a, b) {
  a.pipe(b);
  b.pipe(a);
  const fail = () => {
    a.destroy();
    b.destroy();
  };
  a.on('error', fail);
  b.on('error', fail);
  const linger = (other) => () => {
    if (other.destroyed) return;
    other.end();
    setTimeout(() => other.destroy(), LINGER_MS).unref();
  };
  a.once('close', linger(b));
  b.once('close', linger(a));
}

function listen(server, ...args) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(...args, () => {
      server.off('error', reject);
      server.on('error', (error) => note(`listener error: ${error.code ?? error.message}`));
      resolve();
    });
  });
}

/**
 * Loopback ports bridged to a host socket bound read-only under /run/enclave:
 * the agent may use one as soon as it runs, so they listen before it starts.
 */
async function openOutboundBridges(config) {
  await Promise.all(
    config.outbound.map(async ({ port, to }, index) => {
      const socket = to === 'gateway' ? GATEWAY_SOCKET : EGRESS_SOCKET;
      const server = net.createServer({ allowHalfOpen: true }, (client) => {
        bridge(client, net.connect({ path: socket, allowHalfOpen: true }));
      });
      // Under the starter they listen already, and a connection made since waits in the backlog.
      await listen(server, STARTER ? { fd: FIRST_LISTEN_FD + index } : { port, host: '127.0.0.1' });
      servers.push(server);
    }),
  );
}

/**
 * The listening sockets the host bound and handed in: a connection made
 * before they are opened here waits in the socket's backlog, so they open
 * while the agent starts.
 */
async function openInboundBridges(config) {
  const ingress = net.createServer({ allowHalfOpen: true }, (client) => connectAgent(client, config.port));
  // Support connections come from the host's relay only; while support is off they are closed at once.
  const supportListener = net.createServer((socket) => {
    if (support === undefined) socket.destroy();
    else support.server.injectSocket(socket);
  });
  await Promise.all([listen(ingress, { fd: INGRESS_FD }), listen(supportListener, { fd: SUPPORT_FD })]);
  servers.push(ingress, supportListener);
}

// ---- the agent ----

function agentStarted(pid) {
  agent = { pid, running: true };
}

function agentFailed(program, code) {
  const reason =
    code === 'ENOENT'
      ? `command not found: ${program}`
      : code === 'EACCES'
        ? `command not executable: ${program}`
        : `could not start ${program}: ${code}`;
  note(reason);
  report({ event: 'agent-error', reason });
  shutdown(127);
}

function agentExited(code, signal) {
  if (agent !== undefined) agent.running = false;
  if (exiting) return; // it never ran (agent-error), or the supervisor is ending anyway
  report({ event: 'agent-exit', code, signal });
  note(signal === null ? `the agent exited with code ${code}` : `the agent was killed by ${signal}`);
  shutdown(signal === null ? (code ?? 1) : 128 + (constants.signals[signal] ?? 0));
}

/** Without the starter: the agent in a process group of its own, in /app, stdin on /dev/null. */
function spawnAgent(program, argv, env) {
  const [command, ...args] = argv;
  const child = spawn(command, args, {
    cwd: '/app',
    env,
    stdio: ['ignore', 'inherit', 'inherit'],
    detached: true,
  });
  if (child.pid !== undefined) agentStarted(child.pid);
  child.once('error', (error) => agentFailed(program, error.code ?? error.message));
  child.once('exit', (code, signal) => agentExited(code, signal));
}

/** The agent's port has accepted a connection: reported once, as agent-listening. */
let agentSeen = false;
/** Ingress connections that came before the agent listened, each with the bytes it sent meanwhile. */
const held = new Map();
/** At most this many wait for the agent (the driver's probes); more are closed at once. */
const MAX_HELD = 32;

function seenListening(port) {
  if (agentSeen) return;
  agentSeen = true;
  report({ event: 'agent-listening' });
  for (const [client, early] of held) {
    held.delete(client);
    const upstream = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    client.pause();
    client.removeAllListeners('data');
    for (const chunk of early) upstream.write(chunk);
    bridge(client, upstream); // a client that has ended already ends the upstream too
  }
}

/**
 * Bridges an ingress connection to the agent's port. One that comes before
 * the agent listens is held, its bytes kept, until watchAgentPort sees the
 * port accept (the driver's first probe, sent as soon as the bridges
 * listen, is answered the moment the agent listens) or the client goes.
 */
function connectAgent(client, port) {
  if (agentSeen) {
    bridge(client, net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
    return;
  }
  if (held.size >= MAX_HELD) {
    client.destroy();
    return;
  }
  const early = [];
  let size = 0;
  held.set(client, early);
  client.on('data', (chunk) => {
    early.push(chunk);
    size += chunk.length;
    if (size > MAX_CONTROL_LINE) client.pause(); // the rest waits in the socket
  });
  client.on('error', () => client.destroy());
  client.once('close', () => held.delete(client));
}

/**
 * Watches the agent's port until it accepts a connection. No event says an
 * agent listens; a refused connect inside the sandbox's own network costs
 * next to nothing, so it is tried every few milliseconds.
 */
function watchAgentPort(port) {
  const attempt = () => {
    if (exiting || agentSeen) return;
    const probe = net.connect({ port, host: '127.0.0.1' });
    probe.once('connect', () => {
      probe.destroy();
      seenListening(port);
    });
    probe.once('error', () => {
      probe.destroy();
      setTimeout(attempt, PORT_WATCH_MS);
    });
  };
  attempt();
}

// ---- support SSH (AGT-5) ----

let support;
let shellEnv = {};

/** Sends SIGKILL to a shell's process group. */
function killGroup(child) {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

function runShell(state, channel, args) {
  const child = spawn('/bin/sh', args, { cwd: '/data', env: shellEnv, stdio: 'pipe', detached: true });
  state.shells.add(child);
  child.stdin.on('error', () => undefined);
  child.on('error', (error) => {
    channel.stderr.write(`${error.message}\n`);
    channel.exit(127);
    channel.end();
  });
  channel.pipe(child.stdin);
  child.stdout.pipe(channel, { end: false });
  child.stderr.pipe(channel.stderr, { end: false });
  child.on('close', (code, signal) => {
    state.shells.delete(child);
    if (signal !== null) channel.exit(signal.replace(/^SIG/, ''), false, '');
    else channel.exit(code ?? 0);
    channel.end();
  });
  channel.on('close', () => killGroup(child));
}

/** A fresh Ed25519 host key that ssh2 can read back (a few in a thousand it generates, it cannot). */
function generateHostKey(ssh2) {
  for (let attempt = 0; attempt < 32; attempt++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519');
    const parsed = ssh2.utils.parseKey(pair.private);
    if (!(parsed instanceof Error) && !Array.isArray(parsed)) return pair;
  }
  throw new Error('could not generate a host key');
}

async function supportOn(keyLine) {
  if (support !== undefined && support.keyLine === keyLine) return support.hostKey;
  void supportOff();
  const [{ default: ssh2 }, { timingSafeEqual }] = await Promise.all([import('ssh2'), import('node:crypto')]);
  const allowed = ssh2.utils.parseKey(keyLine);
  if (allowed instanceof Error || Array.isArray(allowed))
    throw new Error('the support key is not an OpenSSH public key');
  const allowedBlob = allowed.getPublicSSH();
  const hostKey = generateHostKey(ssh2);
  const state = {
    keyLine,
    hostKey: hostKey.public.trim(),
    clients: new Set(),
    shells: new Set(),
    server: undefined,
  };
  const server = new ssh2.Server({ hostKeys: [hostKey.private] }, (client) => {
    state.clients.add(client);
    client.on('error', () => undefined);
    client.on('close', () => state.clients.delete(client));
    client.on('authentication', (ctx) => {
      // The client controls the offered key and signature: only the operator's key, verified, gets in.
      if (ctx.method !== 'publickey') return ctx.reject(['publickey']);
      const offered = ctx.key.data;
      const same =
        ctx.key.algo === allowed.type &&
        offered.length === allowedBlob.length &&
        timingSafeEqual(offered, allowedBlob);
      if (!same) return ctx.reject(['publickey']);
      if (ctx.signature !== undefined && allowed.verify(ctx.blob, ctx.signature, ctx.hashAlgo) !== true) {
        return ctx.reject(['publickey']);
      }
      return ctx.accept();
    });
    client.on('ready', () => {
      client.on('session', (accept) => {
        const session = accept();
        session.on('pty', (acceptPty) => acceptPty?.());
        session.on('window-change', (acceptChange) => acceptChange?.());
        session.on('env', (acceptEnv) => acceptEnv?.());
        session.on('shell', (acceptShell) => runShell(state, acceptShell(), []));
        session.on('exec', (acceptExec, _reject, info) =>
          runShell(state, acceptExec(), ['-c', info.command]),
        );
        session.on('subsystem', (_accept, rejectSubsystem) => rejectSubsystem?.());
      });
    });
  });
  server.on('error', (error) => note(`support server error: ${error.code ?? error.message}`));
  state.server = server;
  support = state;
  note('support access is on');
  return state.hostKey;
}

/** Ends every open session; new connections are closed at once from here on. */
function supportOff() {
  const state = support;
  if (state === undefined) return;
  support = undefined;
  for (const client of state.clients) {
    client.end();
    setTimeout(() => client._sock?.destroy?.(), 1000).unref();
  }
  const groups = [...state.shells].map((shell) => shell.pid).filter((pid) => pid !== undefined);
  for (const shell of state.shells) killGroup(shell);
  note('support access is off');
  return groupsGone(groups);
}

/** Resolves once no process is left in any of the sessions' process groups (SIGKILL is not instant). */
async function groupsGone(groups, deadline = Date.now() + 2000) {
  const alive = (pgid) => {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch {
      return false;
    }
  };
  while (groups.some(alive) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// ---- control (fd 4) ----

function handleCommand(line) {
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    return;
  }
  if (command?.cmd !== 'support') return;
  const id = command.id;
  if (typeof command.key === 'string') {
    supportOn(command.key).then(
      (hostKey) => report({ event: 'support', id, on: true, hostKey }),
      (error) => report({ event: 'support', id, on: false, error: error.message }),
    );
  } else {
    // Acknowledged once the sessions' processes are gone, so "off" means nothing of them is left.
    void Promise.resolve(supportOff()).then(() => report({ event: 'support', id, on: false }));
  }
}

let pending = '';
control.on('data', (chunk) => {
  pending += chunk.toString('utf8');
  if (pending.length > MAX_CONTROL_LINE && !pending.includes('\n')) pending = '';
  let newline = pending.indexOf('\n');
  while (newline !== -1) {
    handleCommand(pending.slice(0, newline));
    pending = pending.slice(newline + 1);
    newline = pending.indexOf('\n');
  }
});
// The driver is gone (the sandbox dies with it anyway): stop the agent.
control.on('end', () => {
  if (!exiting) process.emit('SIGTERM');
});

// ---- start ----

async function main() {
  report({ event: 'hello' });
  let config;
  if (STARTER) {
    config = await readStarter();
    shellEnv = config.shellEnv;
    await openOutboundBridges(config);
  } else {
    const frame = await readFrame();
    let launch;
    try {
      launch = parseFrame(frame);
    } finally {
      frame.fill(0);
    }
    config = launch.config;
    shellEnv = config.shellEnv;
    await openOutboundBridges(config);
    spawnAgent(config.program, launch.argv, launch.env);
  }
  await openInboundBridges(config);
  report({ event: 'listening' });
  watchAgentPort(config.port);
  if (typeof config.supportKey === 'string') {
    await supportOn(config.supportKey).then(
      (hostKey) => report({ event: 'support', id: 0, on: true, hostKey }),
      (error) => {
        note(`support access could not start: ${error.message}`);
        report({ event: 'support', id: 0, on: false, error: error.message });
      },
    );
  }
}

main().catch((error) => {
  const reason = `the supervisor could not start: ${error.code ?? error.message}`;
  note(reason);
  report({ event: 'agent-error', reason });
  shutdown(126);
});
