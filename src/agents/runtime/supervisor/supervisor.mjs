// The supervisor: the first process inside an instance's sandbox (under
// bubblewrap's pid-1 reaper), run by the host's node binary bound at
// /opt/enclave/bin/node. Plain JavaScript: it runs as is, with no loader.
//
//   fd 3  in: one framed message from the driver, then EOF: the config and
//         the secrets (u32 length + JSON config, u32 count, then per secret
//         u32 length + name, u32 length + value). Secrets never pass through
//         argv or the environment of anything outside the sandbox.
//   fd 4  both ways, JSON lines: commands from the driver ({"id","cmd":"support","key"}),
//         events to it ({"event":"hello"|"listening"|"agent-listening"|"agent-error"|"agent-exit"|"support"}).
//   fd 6  a listening socket the host bound in its own directory: ingress.
//   fd 7  a listening socket the host bound in its own directory: support SSH,
//         which only the host's relay connects to (AGT-5).
//
// It starts the agent with the non-secret env, the secrets, PORT and the
// proxy variables; bridges ingress connections (fd 6) → 127.0.0.1:<agent
// port>, 127.0.0.1:<proxy port> → /run/enclave/egress.sock (a read-only
// bind of the host's socket) and, for an agent that calls models,
// 127.0.0.1:<gateway port> → /run/enclave/gateway.sock, with the model SDKs'
// base-URL variables and their key variables set to the agent's own token
// (AGT-7: never a provider key); serves support SSH on fd 7 while support is
// on (AGT-5); forwards SIGTERM and SIGINT to the agent and exits with the
// agent's status. It creates no file: the sandbox has nowhere to put one
// that the host would read.
//
// Its own start is on every instance's cold start (the agent starts only
// once it runs): it imports only what the agent's start needs, the rest
// (ssh2, node:crypto) when support is turned on.
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
const MAX_CONFIG_BYTES = 1024 * 1024;
const MAX_CONTROL_LINE = 64 * 1024;
/** After one side of a bridged connection closes, how long the other may take to drain. */
const LINGER_MS = 10_000;
/** How often the agent's port is tried until it accepts (watchAgentPort). */
const PORT_WATCH_MS = 3;

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

closeStrayFds();

const control = new net.Socket({ fd: CONTROL_FD, readable: true, writable: true });
control.on('error', () => undefined);

function report(event) {
  if (!control.destroyed) control.write(`${JSON.stringify(event)}\n`);
}

let exiting = false;
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
    if (agent?.pid !== undefined && agent.exitCode === null && agent.signalCode === null) {
      try {
        process.kill(-agent.pid, signal); // its process group: the agent and what it started
      } catch {
        agent.kill(signal);
      }
    } else {
      shutdown(128 + constants.signals[signal]);
    }
  });
}
process.on('SIGHUP', () => undefined);

// ---- config and secrets (fd 3) ----

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
  const take = () => {
    if (offset + 4 > frame.length) throw new Error('the config frame is truncated');
    const length = frame.readUInt32BE(offset);
    offset += 4;
    if (offset + length > frame.length) throw new Error('the config frame is truncated');
    const slice = frame.subarray(offset, offset + length);
    offset += length;
    return slice;
  };
  const config = JSON.parse(take().toString('utf8'));
  if (offset + 4 > frame.length) throw new Error('the config frame is truncated');
  const count = frame.readUInt32BE(offset);
  offset += 4;
  const secrets = {};
  for (let i = 0; i < count; i++) {
    const name = take().toString('utf8');
    secrets[name] = take().toString('utf8');
  }
  return { config, secrets };
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
  const outbound = [{ port: config.proxyPort, socket: EGRESS_SOCKET }];
  if (config.gateway !== null) outbound.push({ port: config.gateway.port, socket: GATEWAY_SOCKET });
  await Promise.all(
    outbound.map(async ({ port, socket }) => {
      const server = net.createServer({ allowHalfOpen: true }, (client) => {
        bridge(client, net.connect({ path: socket, allowHalfOpen: true }));
      });
      await listen(server, { port, host: '127.0.0.1' });
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
  const ingress = net.createServer({ allowHalfOpen: true }, (client) => {
    bridge(client, net.connect({ port: config.port, host: '127.0.0.1', allowHalfOpen: true }));
  });
  // Support connections come from the host's relay only; while support is off they are closed at once.
  const supportListener = net.createServer((socket) => {
    if (support === undefined) socket.destroy();
    else support.server.injectSocket(socket);
  });
  await Promise.all([listen(ingress, { fd: INGRESS_FD }), listen(supportListener, { fd: SUPPORT_FD })]);
  servers.push(ingress, supportListener);
}

// ---- the agent ----

function startAgent(config, env) {
  const [program, ...args] = config.command;
  const shown = config.program;
  agent = spawn(program, args, { cwd: '/app', env, stdio: ['ignore', 'inherit', 'inherit'], detached: true });
  agent.once('error', (error) => {
    const reason =
      error.code === 'ENOENT'
        ? `command not found: ${shown}`
        : error.code === 'EACCES'
          ? `command not executable: ${shown}`
          : `could not start ${shown}: ${error.code ?? error.message}`;
    note(reason);
    report({ event: 'agent-error', reason });
    shutdown(127);
  });
  agent.once('exit', (code, signal) => {
    report({ event: 'agent-exit', code, signal });
    note(signal === null ? `the agent exited with code ${code}` : `the agent was killed by ${signal}`);
    shutdown(signal === null ? (code ?? 1) : 128 + (constants.signals[signal] ?? 0));
  });
}

/**
 * Reports agent-listening once the agent's port accepts a connection. No
 * event says an agent listens; a refused connect inside the sandbox's own
 * network costs next to nothing, so it is tried every few milliseconds and
 * the driver's HTTP probe (through the ingress socket) follows at once.
 */
function watchAgentPort(port) {
  const attempt = () => {
    if (exiting) return;
    const probe = net.connect({ port, host: '127.0.0.1' });
    probe.once('connect', () => {
      probe.destroy();
      report({ event: 'agent-listening' });
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
  const frame = await readFrame();
  let parsed;
  try {
    parsed = parseFrame(frame);
  } finally {
    frame.fill(0);
  }
  const { config, secrets } = parsed;
  const proxy = `http://127.0.0.1:${config.proxyPort}`;
  const platform = {
    PATH: config.path,
    HOME: '/data',
    LANG: 'C.UTF-8',
    PORT: String(config.port),
    HTTP_PROXY: proxy,
    HTTPS_PROXY: proxy,
    http_proxy: proxy,
    https_proxy: proxy,
    NO_PROXY: 'localhost,127.0.0.1',
    no_proxy: 'localhost,127.0.0.1',
    NODE_USE_ENV_PROXY: '1',
  };
  // The model gateway (AGT-7): each SDK's base URL, and its key variable holding the agent's own token.
  const gateway = {};
  if (config.gateway !== null) {
    Object.assign(gateway, config.gateway.env);
    const token = secrets.ENCLAVE_AGENT_TOKEN;
    if (token !== undefined) for (const name of config.gateway.keyVariables) gateway[name] = token;
  }
  shellEnv = { ...config.env, ...config.gateway?.env, ...platform };
  await openOutboundBridges(config);
  startAgent(config, { ...config.env, ...secrets, ...gateway, ...platform });
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
