import type { SandboxGateway } from '../../gateway/service.ts';
import { SANDBOX_PATH_ENV, SANDBOX_PATHS } from './bwrap-args.ts';

// The environment an instance's agent starts with, and the one a support
// shell gets, decided on the host: the starter (or the supervisor) only
// passes it on. Later sources win: the template's and the agent's
// variables, then the secrets, then the model gateway's, then the
// platform's own, which nothing overrides.

export interface AgentEnvInput {
  /** The agent's non-secret variables (the driver has checked their names). */
  readonly env: Readonly<Record<string, string>>;
  /** The agent's secrets, by variable name: Buffers the caller zeroes. */
  readonly secrets: ReadonlyMap<string, Buffer>;
  /** The model gateway's variables (AGT-7), or null for an agent that calls no models. */
  readonly gateway: SandboxGateway | null;
  readonly port: number;
  readonly proxyPort: number;
}

export interface AgentEnvironment {
  /** The agent's variables, in order, values as Buffers (secrets are the caller's own Buffers, not copies). */
  readonly agent: readonly (readonly [string, Buffer])[];
  /** A support shell's variables: everything but the secrets and the gateway token. */
  readonly shell: Readonly<Record<string, string>>;
}

/** The variable that holds the agent's own gateway token among its secrets (AGT-7). */
export const AGENT_TOKEN_VARIABLE = 'ENCLAVE_AGENT_TOKEN';

export function agentEnvironment(input: AgentEnvInput): AgentEnvironment {
  const proxy = `http://127.0.0.1:${input.proxyPort}`;
  const platform: Record<string, string> = {
    PATH: SANDBOX_PATH_ENV,
    HOME: SANDBOX_PATHS.data,
    LANG: 'C.UTF-8',
    PORT: String(input.port),
    HTTP_PROXY: proxy,
    HTTPS_PROXY: proxy,
    http_proxy: proxy,
    https_proxy: proxy,
    NO_PROXY: 'localhost,127.0.0.1',
    no_proxy: 'localhost,127.0.0.1',
    NODE_USE_ENV_PROXY: '1',
  };
  const agent = new Map<string, Buffer>();
  const put = (name: string, value: Buffer) => agent.set(name, value);
  for (const [name, value] of Object.entries(input.env)) put(name, Buffer.from(value, 'utf8'));
  for (const [name, value] of input.secrets) put(name, value);
  // Each SDK's base URL, and its key variable holding the agent's own token (never a provider key).
  if (input.gateway !== null) {
    for (const [name, value] of Object.entries(input.gateway.env)) put(name, Buffer.from(value, 'utf8'));
    const token = input.secrets.get(AGENT_TOKEN_VARIABLE);
    if (token !== undefined) for (const name of input.gateway.keyVariables) put(name, token);
  }
  for (const [name, value] of Object.entries(platform)) put(name, Buffer.from(value, 'utf8'));
  return {
    agent: [...agent],
    shell: { ...input.env, ...input.gateway?.env, ...platform },
  };
}
