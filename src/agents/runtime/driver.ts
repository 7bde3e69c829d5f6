// The runtime driver interface (DESIGN.md, Runtime): how the platform runs
// one agent instance, whatever isolates it. The local driver
// (bwrap-driver.ts) runs each instance in a bubblewrap sandbox on this host;
// production drivers (Kubernetes pods under gVisor or Kata, Fly Machines)
// implement the same interface (docs/runtime.md).
//
// Terminology: an *instance* is one running copy of an agent. Its *instance
// directory* (`<data dir>/instances/<agent id>/`) holds its volume (the
// agent's /data) and `host/`, the host's own directory, whose Unix sockets
// connect it to the platform (host-sockets.ts):
//   host/ingress.sock        the platform's ingress → the supervisor → the agent's declared port
//   host/egress.sock         the supervisor's HTTP proxy port → the platform's egress proxy
//   host/gateway.sock        the supervisor's gateway port → the platform's model gateway
//                            (templates that call models only)
//   host/support.sock        the operator's CLI → the driver's relay → the supervisor's SSH
//                            server, present only while support access is on
// The *supervisor* is the sandbox's first process: it bridges those sockets,
// starts the agent, forwards signals, reaps children and exits with it.

export type InstanceState = 'stopped' | 'starting' | 'running' | 'crashed' | 'stopping';

export interface InstanceLimits {
  /** Memory the instance may use, in MiB. */
  readonly memoryMb: number;
  /** Processes (and threads) the instance may have at once. */
  readonly processes: number;
  /** Open files per process. */
  readonly openFiles: number;
  /** CPU share in percent of one core; enforced only where cgroup v2 allows. */
  readonly cpuPercent: number;
  /** Bytes the instance's volume may hold. */
  readonly volumeMb: number;
}

/** Who the instance is, for the egress proxy's records and allowlist. */
export interface EgressIdentity {
  readonly tenantId: string;
  readonly agentId: string;
  /** Domains the agent may reach (exact names or `*.suffix`); undefined: any public destination. */
  readonly allowlist: readonly string[] | undefined;
}

export interface InstanceSpec {
  readonly agentId: string;
  readonly tenantId: string;
  /** The template's argv; relative paths resolve against the template directory, seen in the sandbox at /app. */
  readonly command: readonly string[];
  /** Host directory with the agent's code (the template file's directory), bound read-only at /app. */
  readonly templateDir: string;
  /** The port the agent listens on inside its sandbox's loopback. */
  readonly port: number;
  readonly limits: InstanceLimits;
  readonly egress: EgressIdentity;
  /** The template calls models: the instance gets a gateway socket and its SDK variables (AGT-7). */
  readonly modelGateway: boolean;
  /** Non-secret environment: PORT, HTTP(S)_PROXY and friends are set by the driver itself. */
  readonly env: Readonly<Record<string, string>>;
  /**
   * Secret environment (credentials, ENCLAVE_AGENT_TOKEN): handed to the
   * supervisor over a pipe, never through argv, the environment of any host
   * process, the instance directory or a log. The driver zeroes every Buffer
   * once written (VLT-5).
   */
  readonly secrets: ReadonlyMap<string, Buffer>;
  /** The operator's support public key (OpenSSH line) when support access is on (AGT-5). */
  readonly supportKey: string | undefined;
}

export interface InstanceStatus {
  readonly state: InstanceState;
  /** Why it is stopped or crashed: exit code or signal, a start timeout, a missing command. */
  readonly reason: string | undefined;
  readonly startedAt: Date | undefined;
}

/** Why a running instance ended on its own (not through stop()). */
export interface InstanceExit {
  readonly agentId: string;
  readonly reason: string;
}

export interface RuntimeDriver {
  /**
   * Starts the instance and resolves once its agent answers on its declared
   * port through the ingress socket; rejects (with the reason, the instance
   * cleaned up) if it exits or does not open the port in time.
   */
  start(spec: InstanceSpec): Promise<void>;
  /** SIGTERM to the supervisor, SIGKILL after `graceMs`; resolves once every process is gone. Idempotent. */
  stop(agentId: string, options?: { graceMs?: number }): Promise<void>;
  status(agentId: string): InstanceStatus;
  /** The last `lines` lines of the instance's output (stdout and stderr), oldest first. */
  logs(agentId: string, lines: number): Promise<string[]>;
  /** Opens or closes the support SSH listener at once; closing ends open sessions (AGT-5). */
  setSupportAccess(agentId: string, supportKey: string | undefined): Promise<void>;
  /** Called when a running instance exits without stop(): the lifecycle restarts it with backoff. */
  onExit(listener: (exit: InstanceExit) => void): void;
  /**
   * The agent is deleted: stops its instance and removes its directory,
   * volume included, once nothing of its sandbox is left. Idempotent.
   */
  remove(agentId: string): Promise<void>;
  /** Stops every instance this driver started (worker shutdown). */
  stopAll(): Promise<void>;
}
