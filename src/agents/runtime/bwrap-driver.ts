import { isUtf8 } from 'node:buffer';
import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { UnenforcedLimit } from '../../config.ts';
import { AppError, isAppError } from '../../errors.ts';
import type { Gateway } from '../../gateway/service.ts';
import type { Logger } from '../../logger.ts';
import type { EgressProxy } from '../egress/proxy.ts';
import type { InstanceExit, InstanceSpec, InstanceState, InstanceStatus, RuntimeDriver } from './driver.ts';
import { type CgroupSupport, detectCgroups } from './limits.ts';
import { tailLines } from './output-log.ts';
import { detectSandboxHost, findExecutable } from './sandbox-host.ts';
import {
  HOST_SETUP_FAILED,
  launchSandbox,
  type Run,
  type SandboxHostSupport,
  terminate,
  waitReady,
} from './sandbox-run.ts';
import type { SupportAnswer } from './supervisor-channel.ts';
import { isHostKeyLine, openSupportRelay } from './support-relay.ts';
import { startMemoryWatch, startVolumeWatch } from './usage-watch.ts';
import { detectVolumeImages } from './volume-image.ts';

// The local runtime driver (AGT-2, AGT-5, AGT-6, VLT-5 at start): each
// instance runs in a bubblewrap sandbox on this host, under the supervisor
// (supervisor/supervisor.mjs); docs/runtime.md describes the sandbox. This
// file keeps each instance's state and orders the calls for one agent id:
// they run one at a time, in order, and a stop() cuts short the starts
// queued or running before it. A sandbox's own life is in sandbox-run.ts.

export type RuntimeErrorCode = 'instance_invalid' | 'instance_start_failed' | 'instance_unreachable';

export class RuntimeError extends AppError<RuntimeErrorCode> {
  constructor(code: RuntimeErrorCode, message: string) {
    super(code, message);
    this.name = 'RuntimeError';
  }
}

export interface BwrapDriverDeps {
  readonly instancesDir: string;
  readonly egress: Pick<EgressProxy, 'listen'>;
  /** The model gateway (AGT-7); without it, no instance gets a gateway socket. */
  readonly gateway?: Pick<Gateway, 'listen'> | undefined;
  readonly logger: Logger;
  /** How long an agent may take to answer on its port (default 20 s). */
  readonly startTimeoutMs?: number;
  /** Limits the operator lets go unenforced on this host (ENCLAVE_UNENFORCED_LIMITS, AGT-6). */
  readonly unenforcedLimits?: readonly UnenforcedLimit[];
  /** false: use no cgroup even where the host has them, as on a host without (default true). */
  readonly cgroups?: boolean;
  /** false: start without the native launcher and starter, as on a host that cannot build them (default true). */
  readonly native?: boolean;
}

const DEFAULT_START_TIMEOUT_MS = 20_000;
const DEFAULT_GRACE_MS = 10_000;
/** How long an instance whose volume is over its limit gets to wind down (one over its memory gets none). */
const VOLUME_GRACE_MS = 2000;
const SUPPORT_TIMEOUT_MS = 10_000;
// The agent id names a directory: one path segment of safe characters (a uuid in practice).
const AGENT_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
/**
 * What the agent's environment may hold, variables and secrets together:
 * well inside the config frame's bounds (1 MiB, 4096 entries, which the
 * starter and the supervisor enforce), with room for the platform's own.
 */
const MAX_ENV_ENTRIES = 4000;
const MAX_ENV_BYTES = 960 * 1024;

interface Instance {
  state: InstanceState;
  reason: string | undefined;
  startedAt: Date | undefined;
  run: Run | undefined;
  /** Starts not yet finished: stop() aborts them. */
  readonly starts: Set<AbortController>;
}

function validateSpec(spec: InstanceSpec): void {
  const invalid = (message: string) => new RuntimeError('instance_invalid', message);
  if (!AGENT_ID.test(spec.agentId)) throw invalid('the agent id is not a safe name');
  if (spec.command.length === 0) throw invalid('the command is empty');
  if (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535)
    throw invalid('the port is invalid');
  for (const [name, value] of Object.entries(spec.env)) {
    if (!ENV_NAME.test(name) || value.includes('\0'))
      throw invalid(`environment variable ${name} is invalid`);
  }
  let bytes = 0;
  for (const [name, value] of Object.entries(spec.env)) bytes += name.length + Buffer.byteLength(value) + 2;
  for (const [name, value] of spec.secrets) {
    if (!ENV_NAME.test(name)) throw invalid(`secret variable ${name} is invalid`);
    // An environment variable ends at its first NUL: the agent would get a cut value.
    if (value.includes(0)) throw invalid(`secret variable ${name} holds a NUL byte`);
    // Either way of starting must hand the agent the same bytes: only text.
    if (!isUtf8(value)) throw invalid(`secret variable ${name} is not UTF-8 text`);
    bytes += name.length + value.length + 2;
  }
  if (Object.keys(spec.env).length + spec.secrets.size > MAX_ENV_ENTRIES || bytes > MAX_ENV_BYTES) {
    throw invalid(
      `the environment variables and secrets are too many or too large (at most ${MAX_ENV_ENTRIES}, ${MAX_ENV_BYTES / 1024} KiB together)`,
    );
  }
  if (!path.isAbsolute(spec.templateDir)) throw invalid('the template directory is not absolute');
}

function zero(secrets: ReadonlyMap<string, Buffer>): void {
  for (const value of secrets.values()) value.fill(0);
}

export function createBwrapDriver(deps: BwrapDriverDeps): RuntimeDriver {
  const log = deps.logger.child({ component: 'bwrap-driver' });
  const startTimeoutMs = deps.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const instances = new Map<string, Instance>();
  const queues = new Map<string, Promise<unknown>>();
  const exitListeners: ((exit: InstanceExit) => void)[] = [];
  let host: Promise<SandboxHostSupport> | undefined;

  const launchDeps = {
    instancesDir: deps.instancesDir,
    egress: deps.egress,
    gateway: deps.gateway,
    log,
    unenforcedLimits: deps.unenforcedLimits ?? [],
  };

  const noCgroups: CgroupSupport = { version: undefined, parents: {}, notes: ['cgroups are turned off'] };
  const detect = async (): Promise<SandboxHostSupport> => {
    // Built in a directory of the driver's own beside the instances (an agent id never starts with a dot).
    const sandbox = await detectSandboxHost(
      deps.native === false ? undefined : path.join(deps.instancesDir, '.native'),
    );
    if (!sandbox.native.ok && deps.native !== false) {
      log.warn(
        { reason: sandbox.native.reason },
        'no native launcher or starter: instances start through a chain of tools, and each agent only once its supervisor has (a slower cold start)',
      );
    }
    const [cgroups, volumes] = await Promise.all([
      deps.cgroups === false ? noCgroups : detectCgroups(),
      detectVolumeImages(deps.instancesDir, { unshare: sandbox.tools.unshare, find: findExecutable }),
    ]);
    return { sandbox, cgroups, volumes };
  };

  const hostOnce = (): Promise<SandboxHostSupport> => {
    host ??= detect();
    host.catch(() => {
      host = undefined; // try again next time (bwrap may be installed meanwhile)
    });
    return host;
  };

  const instance = (agentId: string): Instance => {
    let found = instances.get(agentId);
    if (found === undefined) {
      found = {
        state: 'stopped',
        reason: undefined,
        startedAt: undefined,
        run: undefined,
        starts: new Set(),
      };
      instances.set(agentId, found);
    }
    return found;
  };

  /** Runs fn after every earlier call for this agent id has settled. */
  const serialize = <T>(agentId: string, fn: () => Promise<T>): Promise<T> => {
    const previous = queues.get(agentId) ?? Promise.resolve();
    const result = previous.then(fn, fn);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    queues.set(agentId, tail);
    void tail.then(() => {
      if (queues.get(agentId) === tail) queues.delete(agentId);
    });
    return result;
  };

  /** When a sandbox is gone: the instance is stopped (stop()), or crashed, and a running one is reported. */
  function ended(agentId: string, target: Instance, run: Run, reason: string): void {
    run.ended = true;
    if (target.run !== run) return;
    target.run = undefined;
    if (run.stopping) {
      target.state = 'stopped';
      target.reason = undefined;
      return;
    }
    const wasRunning = target.state === 'running';
    target.state = 'crashed';
    target.reason = reason;
    if (!wasRunning) return; // start() rejects with the reason
    log.info({ agentId, reason }, 'instance exited');
    for (const listener of exitListeners) {
      try {
        listener({ agentId, reason });
      } catch (error) {
        log.error({ err: error }, 'an onExit listener threw');
      }
    }
  }

  /** Publishes the supervisor's SSH server through the host's relay (support-relay.ts). */
  async function relaySupport(run: Run, answer: SupportAnswer): Promise<void> {
    if (answer.error !== undefined) throw new Error(answer.error);
    if (!isHostKeyLine(answer.hostKey)) throw new Error('the instance reported no valid host key');
    if (run.supportRelay?.hostKey === answer.hostKey) return;
    await run.supportRelay?.close();
    run.supportRelay = undefined;
    if (run.ended) return;
    run.supportRelay = await openSupportRelay(run.hostDir, answer.hostKey);
  }

  async function startNow(spec: InstanceSpec, abort: AbortController): Promise<void> {
    const target = instance(spec.agentId);
    if (abort.signal.aborted) throw new RuntimeError('instance_start_failed', 'stopped before it started');
    if (target.run !== undefined && target.state === 'running') return; // already running: start is idempotent
    const current = await hostOnce().catch((error: unknown) => {
      log.error({ err: error }, 'the sandbox host could not be detected');
      throw new RuntimeError('instance_start_failed', HOST_SETUP_FAILED);
    });
    const template = await stat(spec.templateDir).catch(() => undefined);
    if (template?.isDirectory() !== true) {
      throw new RuntimeError('instance_start_failed', 'the template directory does not exist');
    }
    target.state = 'starting';
    target.reason = undefined;
    target.startedAt = undefined;
    let run: Run | undefined;
    try {
      run = await launchSandbox(launchDeps, spec, current).catch((error: unknown) => {
        // Typed errors (a refusal, a volume that cannot shrink …) are written for the owner; anything
        // else may name host paths: the operator's log has it, the owner a plain reason.
        if (isAppError(error)) throw error;
        log.error({ agentId: spec.agentId, err: error }, 'the sandbox could not be set up');
        throw new Error(HOST_SETUP_FAILED);
      });
      const launched = run;
      target.run = launched;
      void launched.done.then((reason) => ended(spec.agentId, target, launched, reason));
      await waitReady(launched, spec, startTimeoutMs, abort.signal);
      if (spec.supportKey !== undefined) {
        // The instance runs without support rather than not at all; the owner sees why in its log.
        await relaySupport(launched, await launched.control.supportSettled).catch((error: unknown) =>
          launched.log.note(`support access could not start: ${(error as Error).message}`),
        );
      }
    } catch (error) {
      const reason = (error as Error).message;
      if (run !== undefined) {
        run.stopping = abort.signal.aborted;
        await terminate(run, 0);
      }
      target.state = abort.signal.aborted ? 'stopped' : 'crashed';
      target.reason = abort.signal.aborted ? undefined : reason;
      throw new RuntimeError('instance_start_failed', reason);
    }
    target.state = 'running';
    target.startedAt = new Date();
    run.log.note(`running: answering on port ${spec.port}`);
    log.info({ agentId: spec.agentId }, 'instance started');
    const started = run;
    const overLimit = (reason: string, graceMs: number) => () => {
      if (started.ended || started.stopping) return;
      started.killReason = reason;
      started.log.note(`${reason}: stopping`);
      void terminate(started, graceMs);
    };
    if (!started.volumeByImage) {
      started.watches.push(
        startVolumeWatch(
          path.join(deps.instancesDir, spec.agentId, 'volume'),
          spec.limits.volumeMb,
          overLimit('volume over its limit', VOLUME_GRACE_MS),
        ),
      );
    }
    if (!started.memoryByCgroup && started.sandboxPid !== undefined) {
      started.watches.push(
        startMemoryWatch(started.sandboxPid, spec.limits.memoryMb, overLimit('memory over its limit', 0)),
      );
    }
  }

  async function stop(agentId: string, options: { graceMs?: number } = {}): Promise<void> {
    if (!AGENT_ID.test(agentId)) return;
    const target = instance(agentId);
    for (const abort of target.starts) abort.abort();
    await serialize(agentId, async () => {
      const run = target.run;
      if (run === undefined) {
        target.state = 'stopped';
        target.reason = undefined;
        return;
      }
      run.stopping = true;
      target.state = 'stopping';
      await terminate(run, options.graceMs ?? DEFAULT_GRACE_MS);
    });
  }

  return {
    /** Starts the instance; one that is already running is left as it is (its new spec's secrets are zeroed). */
    async start(spec) {
      try {
        validateSpec(spec);
      } catch (error) {
        zero(spec.secrets);
        throw error;
      }
      const target = instance(spec.agentId);
      const abort = new AbortController();
      target.starts.add(abort);
      try {
        await serialize(spec.agentId, () => startNow(spec, abort));
      } finally {
        target.starts.delete(abort);
        zero(spec.secrets);
      }
    },

    stop,

    status(agentId): InstanceStatus {
      const found = instances.get(agentId);
      return { state: found?.state ?? 'stopped', reason: found?.reason, startedAt: found?.startedAt };
    },

    async logs(agentId, lines) {
      if (!AGENT_ID.test(agentId)) return [];
      return tailLines(path.join(deps.instancesDir, agentId, 'output.log'), lines);
    },

    async setSupportAccess(agentId, supportKey) {
      if (!AGENT_ID.test(agentId)) return;
      await serialize(agentId, async () => {
        const run = instances.get(agentId)?.run;
        if (run === undefined || run.ended) return; // the next start takes the key from its spec
        if (supportKey === undefined) {
          // Cut on the host first: every session ends now, whatever the sandbox makes of the command.
          await run.supportRelay?.close();
          run.supportRelay = undefined;
          const result = await run.control.support(undefined, SUPPORT_TIMEOUT_MS);
          if (result.error !== undefined)
            log.warn({ agentId, reason: result.error }, 'support off: no answer');
          return;
        }
        const result = await run.control.support(supportKey, SUPPORT_TIMEOUT_MS);
        try {
          await relaySupport(run, result);
        } catch (error) {
          throw new RuntimeError(
            'instance_unreachable',
            `support access could not change: ${(error as Error).message}`,
          );
        }
      });
    },

    onExit(listener) {
      exitListeners.push(listener);
    },

    async remove(agentId) {
      if (!AGENT_ID.test(agentId)) return;
      await stop(agentId, { graceMs: 0 });
      await serialize(agentId, async () => {
        // Every process of the sandbox is gone (stop resolves only then), so nothing can change
        // the tree while it goes; rm removes links, it never follows them.
        await rm(path.join(deps.instancesDir, agentId), { recursive: true, force: true });
        instances.delete(agentId);
      });
    },

    async stopAll() {
      await Promise.all([...instances.keys()].map((agentId) => stop(agentId)));
    },
  };
}
