import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import type { UnenforcedLimit } from '../../config.ts';
import { AppError } from '../../errors.ts';
import { type Gateway, sandboxGateway } from '../../gateway/service.ts';
import type { Logger } from '../../logger.ts';
import type { EgressProxy } from '../egress/proxy.ts';
import { agentEnvironment } from './agent-env.ts';
import {
  bwrapArgs,
  CONFIG_FD,
  CONTROL_FD,
  gatewayPortFor,
  INFO_FD,
  INGRESS_FD,
  launchArgv,
  proxyPortFor,
  SECCOMP_FD,
  SUPPORT_FD,
  sandboxCommand,
} from './bwrap-args.ts';
import type { InstanceSpec } from './driver.ts';
import { type HostListener, listenHostSocket, removeHostSocket } from './host-sockets.ts';
import { prepareInstanceDir } from './instance-dir.ts';
import {
  type CgroupSupport,
  createInstanceCgroup,
  type InstanceCgroup,
  limitEnforcement,
  rlimitArgs,
  startRefusal,
  warmCgroupJoin,
} from './limits.ts';
import { createOutputLog, type OutputLog } from './output-log.ts';
import type { SandboxHost } from './sandbox-host.ts';
import { emptyDir, findSupervisorPid, probeIngress, waitGone } from './sandbox-process.ts';
import { type ControlChannel, configFrame, createControlChannel, readInfo } from './supervisor-channel.ts';
import type { SupportRelay } from './support-relay.ts';
import type { VolumeSupport } from './volume-image.ts';

// One launched sandbox, from its launch to the moment nothing of it is left:
// launchSandbox prepares the instance directory, the cgroup and the egress
// listener, spawns the launcher (launchArgv) and hands the supervisor its
// config and secrets on fd 3; waitReady polls host/ingress.sock; terminate
// asks the supervisor to stop and kills what is left after the grace; and
// once the launcher has exited, `done` resolves with the reason after every
// process is gone and every trace (listener, cgroup, sockets) is cleaned up.

export interface SandboxHostSupport {
  readonly sandbox: SandboxHost;
  readonly cgroups: CgroupSupport;
  readonly volumes: VolumeSupport;
}

export interface Run {
  readonly child: ChildProcess;
  readonly log: OutputLog;
  readonly control: ControlChannel;
  /** The instance's host directory (host-sockets.ts). */
  readonly hostDir: string;
  /** host/ingress.sock: bound by the host, accepted on by the supervisor (fd 6). */
  readonly ingressSocket: string;
  /** host/support-agent.sock: the supervisor's SSH server (fd 7), reached only through the relay. */
  readonly supportSocket: string;
  /** The host's support listener while support access is on (support-relay.ts). */
  supportRelay: SupportRelay | undefined;
  /** The kernel holds its memory to the limit (a memory cgroup); otherwise the driver measures it. */
  readonly memoryByCgroup: boolean;
  /** The volume is an image of its own (a hard limit); otherwise the driver measures it. */
  readonly volumeByImage: boolean;
  /** The host pid of the sandbox's init (from bwrap's info fd). */
  sandboxPid: number | undefined;
  /** Set by stop(): the instance ends as stopped, not crashed. */
  stopping: boolean;
  /** Why the driver ended it on its own (a usage watch). */
  killReason: string | undefined;
  /** Stop the usage watches. */
  readonly watches: (() => void)[];
  /** Resolves with the reason once every process is gone and everything is cleaned up. */
  readonly done: Promise<string>;
  ended: boolean;
}

export interface LaunchDeps {
  readonly instancesDir: string;
  readonly egress: Pick<EgressProxy, 'listen'>;
  /** The model gateway (AGT-7), serving a socket per instance whose template calls models; without it, none. */
  readonly gateway?: Pick<Gateway, 'listen'> | undefined;
  readonly log: Logger;
  /** Limits the operator lets go unenforced (ENCLAVE_UNENFORCED_LIMITS): others (seccomp too) refuse the start. */
  readonly unenforcedLimits: readonly UnenforcedLimit[];
}

/** What the launch closes once the sandbox is gone. */
interface Closable {
  close(): Promise<void>;
}

function zero(secrets: ReadonlyMap<string, Buffer>): void {
  for (const value of secrets.values()) value.fill(0);
}

export async function launchSandbox(
  deps: LaunchDeps,
  spec: InstanceSpec,
  host: SandboxHostSupport,
): Promise<Run> {
  const { sandbox, cgroups } = host;
  const seccomp = sandbox.seccomp;
  if (!seccomp.ok) {
    if (!deps.unenforcedLimits.includes('seccomp')) {
      deps.log.warn(
        { agentId: spec.agentId, reason: seccomp.reason },
        'no seccomp filter: install python3-seccomp, or set ENCLAVE_UNENFORCED_LIMITS=seccomp to run without one',
      );
      throw new SandboxRefusal(`the sandbox has no seccomp filter on this host (${seccomp.reason})`);
    }
  }
  // The cgroup and the instance directory are made side by side. The cgroup comes before warming
  // the join (warmCgroupJoin holds the cgroup lock, which a mkdir there would wait for).
  const [made, preparing] = await Promise.allSettled([
    createInstanceCgroup(cgroups, spec.agentId, spec.limits).then((created) => {
      if (created !== undefined) void warmCgroupJoin(cgroups);
      return created;
    }),
    prepareInstanceDir(deps.instancesDir, spec, sandbox, host.volumes),
  ]);
  let cgroup: InstanceCgroup | undefined;
  if (made.status === 'fulfilled') cgroup = made.value;
  else deps.log.warn({ agentId: spec.agentId, err: made.reason }, 'no cgroup for this instance');
  if (preparing.status === 'rejected') {
    await cgroup?.remove().catch(() => undefined);
    throw preparing.reason;
  }
  const prepared = preparing.value;
  const { layout, uid, options, stage } = prepared;
  const launcher = sandbox.native.ok ? sandbox.native.launcher : undefined;
  const rlimitsApplied = launcher !== undefined || sandbox.tools.prlimit !== undefined;
  // AGT-6: what this start cannot hold refuses it, unless the operator allowed it by name.
  const refusal = startRefusal(
    limitEnforcement({
      cgroup,
      cgroups,
      prlimit: rlimitsApplied,
      ownHostUid: stage !== undefined,
      volumeImage: prepared.volumeImage,
    }),
    deps.unenforcedLimits,
  );
  if (refusal !== undefined) {
    await cgroup?.remove().catch(() => undefined);
    throw new SandboxRefusal(refusal);
  }
  const gatewaySocket =
    layout.gatewaySocket === undefined ? undefined : path.join(prepared.hostDir, 'gateway.sock');
  const noGateway: Closable = { close: async () => undefined };
  // The sockets are bound at once (none depends on another); if any fails, all that were bound go.
  const bound = await Promise.allSettled([
    deps.egress.listen(path.join(prepared.hostDir, 'egress.sock'), spec.egress),
    // Bound by the host in its own directory and handed in: the sandbox never names a host path.
    listenHostSocket(prepared.hostDir, 'ingress.sock', 0o600),
    listenHostSocket(prepared.hostDir, 'support-agent.sock', 0o600),
    gatewaySocket === undefined || deps.gateway === undefined
      ? Promise.resolve(noGateway)
      : deps.gateway.listen(gatewaySocket, { tenantId: spec.tenantId, agentId: spec.agentId }),
  ]);
  const [egressBound, ingressBound, supportBound, gatewayBound] = bound;
  if (
    egressBound.status === 'rejected' ||
    ingressBound.status === 'rejected' ||
    supportBound.status === 'rejected' ||
    gatewayBound.status === 'rejected'
  ) {
    for (const listener of [ingressBound, supportBound]) {
      if (listener.status !== 'fulfilled') continue;
      listener.value.server.close();
      await removeHostSocket(listener.value.path);
    }
    for (const outbound of [egressBound, gatewayBound]) {
      if (outbound.status === 'fulfilled') await outbound.value.close().catch(() => undefined);
    }
    await cgroup?.remove().catch(() => undefined);
    throw bound.find((result) => result.status === 'rejected')?.reason;
  }
  const outbound: Closable[] = [egressBound.value, gatewayBound.value];
  const [ingress, support] = [ingressBound.value, supportBound.value];
  const listeners: HostListener[] = [ingress, support];
  const argv = launchArgv(
    {
      shell: sandbox.tools.shell,
      cgroupProcs: cgroup?.procsFiles ?? [],
      rlimits: rlimitsApplied
        ? rlimitArgs(spec.limits, {
            processesByCgroup: cgroups.parents.pids !== undefined && cgroup !== undefined,
            ownHostUid: stage !== undefined,
          })
        : [],
      prlimit: sandbox.tools.prlimit,
      stage,
      setpriv:
        stage !== undefined && sandbox.tools.setpriv !== undefined
          ? { binary: sandbox.tools.setpriv, uid }
          : undefined,
      bwrap: sandbox.tools.bwrap,
      starter: layout.starterBinary !== undefined,
      launcher,
    },
    bwrapArgs(layout, options),
  );
  const output = createOutputLog(path.join(deps.instancesDir, spec.agentId, 'output.log'));
  output.note(`starting ${spec.command[0]} (host uid ${uid})`);
  if (!seccomp.ok) output.note(`no seccomp filter (${seccomp.reason}): allowed by the operator`);
  // No environment of the worker (database URL, keys) reaches any host process of the sandbox.
  const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'];
  stdio[INGRESS_FD] = ingress.fd;
  stdio[SUPPORT_FD] = support.fd;
  stdio[SECCOMP_FD] = seccomp.ok ? 'pipe' : 'ignore';
  const child = spawn(argv[0] as string, argv.slice(1), {
    stdio,
    detached: true,
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
  });
  if (seccomp.ok) {
    // bubblewrap reads the program to its end before it sets anything up.
    const program = child.stdio[SECCOMP_FD as number] as unknown as Duplex;
    program.on('error', () => undefined);
    program.end(seccomp.bpf);
  }
  // The sandbox holds the listeners now; the host's copies close (their sockets stay: see listenHostSocket).
  for (const listener of listeners) listener.server.close();
  const control = createControlChannel(child.stdio[CONTROL_FD] as Duplex);
  let bwrapError: string | undefined;
  child.stdout?.pipe(output, { end: false });
  child.stderr?.pipe(output, { end: false });
  child.stderr?.on('data', (chunk: Buffer) => {
    if (control.hello) return; // from here on, stderr is the instance's: it could print anything
    const line = /^(?:bwrap|enclave-launch|enclave-starter): (.+)$/m.exec(chunk.toString('utf8'))?.[1];
    if (line !== undefined) bwrapError = line.slice(0, 200);
  });
  child.once('error', (error) => output.note(`could not launch the sandbox: ${error.message}`));
  const run: Run = {
    child,
    log: output,
    control,
    hostDir: prepared.hostDir,
    ingressSocket: ingress.path,
    supportSocket: support.path,
    supportRelay: undefined,
    memoryByCgroup: cgroups.parents.memory !== undefined && cgroup !== undefined,
    volumeByImage: prepared.volumeImage,
    sandboxPid: undefined,
    stopping: false,
    killReason: undefined,
    watches: [],
    ended: false,
    done: new Promise<string>((resolve) => {
      child.once('close', (code, signal) => {
        const ending = { code, signal, bwrapError, outbound, cgroup, log: deps.log };
        finish(run, ending).then(resolve, (error: unknown) => {
          deps.log.error({ agentId: spec.agentId, err: error }, 'cleaning up an instance failed');
          resolve('exited');
        });
      });
    }),
  };
  readInfo(child.stdio[INFO_FD as number] as unknown as Duplex, (pid) => {
    run.sandboxPid = pid;
  });
  const proxyPort = proxyPortFor(spec.port);
  const gateway =
    layout.gatewaySocket === undefined || deps.gateway === undefined
      ? null
      : sandboxGateway(gatewayPortFor(spec.port));
  const env = agentEnvironment({ env: spec.env, secrets: spec.secrets, gateway, port: spec.port, proxyPort });
  // The loopback ports bridged out of the sandbox (the agent may use one as soon as it runs).
  const bridges = [
    { port: proxyPort, to: 'egress' },
    ...(gateway === null ? [] : [{ port: gateway.port, to: 'gateway' }]),
  ];
  const frame = configFrame(
    {
      program: spec.command[0],
      port: spec.port,
      outbound: bridges,
      shellEnv: env.shell,
      supportKey: spec.supportKey ?? null,
    },
    { argv: sandboxCommand(spec.command), env: env.agent, ports: bridges.map((bridge) => bridge.port) },
  );
  const input = child.stdio[CONFIG_FD] as Duplex;
  input.on('error', () => undefined);
  // VLT-5: the plaintext lives in this frame and the spec's Buffers until the pipe has it.
  input.write(frame, () => {
    frame.fill(0);
    zero(spec.secrets);
  });
  input.end();
  return run;
}

/** A start this host refuses, in words for the agent's owner (no host path): a limit or filter it cannot enforce. */
export class SandboxRefusal extends AppError<'sandbox_refused'> {
  constructor(message: string) {
    super('sandbox_refused', message);
    this.name = 'SandboxRefusal';
  }
}

/** What an owner is told when the host could not set a sandbox up: the details name host paths. */
export const HOST_SETUP_FAILED =
  "the sandbox could not be set up on this host (the operator's log has the details)";

interface Ending {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly bwrapError: string | undefined;
  /** The egress and gateway listeners, closed once the sandbox is gone. */
  readonly outbound: readonly Closable[];
  readonly cgroup: InstanceCgroup | undefined;
  readonly log: Logger;
}

/** After the launcher has exited and its pipes closed: wait out the sandbox, clean up, and say why it ended. */
async function finish(run: Run, ending: Ending): Promise<string> {
  for (const stopWatch of run.watches) stopWatch();
  if (run.sandboxPid !== undefined) await waitGone(run.sandboxPid);
  const oom = (await ending.cgroup?.oomKills()) ?? 0;
  await run.supportRelay?.close();
  run.supportRelay = undefined;
  for (const listener of ending.outbound) await listener.close().catch(() => undefined);
  await ending.cgroup
    ?.remove()
    .catch((error: unknown) => ending.log.warn({ err: error }, 'a cgroup was left behind'));
  await removeHostSocket(run.ingressSocket);
  await removeHostSocket(run.supportSocket);
  await emptyDir(run.hostDir);
  const agentExit = run.control.agentExit;
  const launcher = ending.signal === null ? `exited with code ${ending.code}` : `killed by ${ending.signal}`;
  let reason: string;
  if (run.killReason !== undefined) reason = run.killReason;
  else if (run.control.agentError !== undefined) reason = run.control.agentError;
  else if (oom > 0) reason = 'killed: out of memory';
  else if (agentExit !== undefined) {
    reason =
      agentExit.signal === null ? `exited with code ${agentExit.code}` : `killed by ${agentExit.signal}`;
  } else if (ending.bwrapError !== undefined && !run.control.hello) {
    // Only before the sandbox's first process said hello: from then on its stderr is the agent's too.
    // bubblewrap names host paths (bind sources): the operator's log has them, the owner a plain reason.
    ending.log.error({ bwrap: ending.bwrapError }, 'the sandbox could not start');
    reason = HOST_SETUP_FAILED;
  } else reason = launcher;
  run.control.close();
  run.log.note(run.stopping ? 'stopped' : `ended: ${reason}`);
  run.log.end();
  return reason;
}

/** SIGTERM to the supervisor (it forwards it to the agent), SIGKILL to all after graceMs; resolves once all is gone. */
export async function terminate(run: Run, graceMs: number): Promise<void> {
  if (run.ended) return;
  const killAll = () => {
    // The launcher's process group (bwrap outside), then the sandbox's init: the kernel ends its pid namespace.
    try {
      if (run.child.pid !== undefined) process.kill(-run.child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    try {
      if (run.sandboxPid !== undefined) process.kill(run.sandboxPid, 'SIGKILL');
    } catch {
      // already gone
    }
  };
  const supervisor =
    graceMs > 0 && run.sandboxPid !== undefined ? await findSupervisorPid(run.sandboxPid) : undefined;
  if (supervisor === undefined) killAll();
  else {
    try {
      process.kill(supervisor, 'SIGTERM');
    } catch {
      killAll();
    }
  }
  const timer = setTimeout(killAll, graceMs);
  await run.done;
  clearTimeout(timer);
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * Resolves once the agent answers an HTTP GET through host/ingress.sock (and
 * a start-time support listener is settled); rejects with the reason when
 * the sandbox ends first, the time is up, or the start is aborted.
 */
export async function waitReady(
  run: Run,
  spec: InstanceSpec,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  const ingress = run.ingressSocket;
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (error?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      if (error === undefined) resolve();
      else reject(error);
    };
    const timer = setTimeout(
      () => settle(new Error(`did not open port ${spec.port} within ${seconds(timeoutMs)}`)),
      timeoutMs,
    );
    const onAbort = () => settle(new Error('stopped before it was ready'));
    signal.addEventListener('abort', onAbort);
    void run.done.then((reason) => settle(new Error(reason)));
    // No event from the agent says "I listen": the supervisor watches its port from inside
    // (agent-listening) and the driver probes at once when told, else with a short backoff.
    // The supervisor is the instance's: its word only brings one probe forward, once.
    const poll = async () => {
      let delay = 10;
      let told = false;
      const toldNow = run.control.agentListening.then(() => {
        told = true;
      });
      while (!settled) {
        if (await probeIngress(ingress)) {
          if (spec.supportKey !== undefined) await run.control.supportSettled;
          settle();
          return;
        }
        const pause = new Promise((next) => setTimeout(next, delay));
        await (told ? pause : Promise.race([pause, toldNow]));
        delay = Math.min(Math.ceil(delay * 1.5), 200);
      }
    };
    void run.control.listening.then(poll);
  });
}
