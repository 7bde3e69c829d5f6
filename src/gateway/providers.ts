import type { ModelProvider } from './provider-names.ts';

// What the gateway serves of each provider's own API, so that the official
// SDKs work unchanged with only their base URL pointed at the gateway
// (AGT-7). A path is served under /<provider> exactly as the provider names
// it, and goes upstream with that prefix removed. Anything else is refused
// before an upstream call.

/** How to read a call's token counts from the provider's answer (usage.ts). */
export type UsageFormat = 'anthropic' | 'openai-chat' | 'openai-responses' | 'google' | 'none';

export interface GatewayRoute {
  readonly provider: ModelProvider;
  /** The path and query sent upstream (the provider prefix removed; a Google `key` parameter dropped). */
  readonly upstreamPath: string;
  readonly method: 'GET' | 'POST';
  /** Where the model is named: the JSON body's `model`, the path (Google), or nowhere (a listing). */
  readonly model:
    | { readonly in: 'body' }
    | { readonly in: 'path'; readonly name: string }
    | { readonly in: 'none' };
  /** Streamed answers: from the path (Google), or decided by the body's `stream` member. */
  readonly stream: 'path' | 'body' | 'never';
  readonly usage: UsageFormat;
  /**
   * The platform's own `/v1/messages`, which templates/llm-chat calls: an
   * Anthropic Messages request whose `"model": "auto"` goes to whichever
   * provider the tenant gave a key for.
   */
  readonly auto: boolean;
}

export type RouteRefusal =
  | { readonly refused: 'path_unknown' }
  | { readonly refused: 'method_not_allowed'; readonly allow: 'GET' | 'POST' };

interface PathRule {
  readonly provider: ModelProvider;
  readonly pattern: RegExp;
  readonly method: 'GET' | 'POST';
  readonly model: 'body' | 'path' | 'none';
  readonly stream: 'path' | 'body' | 'never';
  readonly usage: UsageFormat;
}

const GOOGLE_MODEL = '([A-Za-z0-9][A-Za-z0-9._-]{0,127})';

const RULES: readonly PathRule[] = [
  {
    provider: 'anthropic',
    pattern: /^\/anthropic(\/v1\/messages)$/,
    method: 'POST',
    model: 'body',
    stream: 'body',
    usage: 'anthropic',
  },
  {
    provider: 'anthropic',
    pattern: /^\/anthropic(\/v1\/messages\/count_tokens)$/,
    method: 'POST',
    model: 'body',
    stream: 'never',
    usage: 'none',
  },
  {
    provider: 'openai',
    pattern: /^\/openai(\/v1\/chat\/completions)$/,
    method: 'POST',
    model: 'body',
    stream: 'body',
    usage: 'openai-chat',
  },
  {
    provider: 'openai',
    pattern: /^\/openai(\/v1\/responses)$/,
    method: 'POST',
    model: 'body',
    stream: 'body',
    usage: 'openai-responses',
  },
  {
    provider: 'openai',
    pattern: /^\/openai(\/v1\/models)$/,
    method: 'GET',
    model: 'none',
    stream: 'never',
    usage: 'none',
  },
  {
    provider: 'google',
    pattern: new RegExp(`^/google(/v1beta/models/${GOOGLE_MODEL}:generateContent)$`),
    method: 'POST',
    model: 'path',
    stream: 'never',
    usage: 'google',
  },
  {
    provider: 'google',
    pattern: new RegExp(`^/google(/v1beta/models/${GOOGLE_MODEL}:streamGenerateContent)$`),
    method: 'POST',
    model: 'path',
    stream: 'path',
    usage: 'google',
  },
  {
    provider: 'xai',
    pattern: /^\/xai(\/v1\/chat\/completions)$/,
    method: 'POST',
    model: 'body',
    stream: 'body',
    usage: 'openai-chat',
  },
];

/** Query parameters passed upstream; any other is dropped (Google's `key` above all: the agent's token rides in it). */
const PASSED_QUERY: Readonly<Record<ModelProvider, readonly string[]>> = {
  anthropic: ['beta'],
  openai: [],
  google: ['alt'],
  xai: [],
};

/** The route a request names, or why it is refused. `rawUrl` is the request target as sent (origin form). */
export function routeOf(method: string, rawUrl: string): GatewayRoute | RouteRefusal {
  const query = rawUrl.indexOf('?');
  const pathname = query === -1 ? rawUrl : rawUrl.slice(0, query);
  if (pathname === '/v1/messages') {
    if (method !== 'POST') return { refused: 'method_not_allowed', allow: 'POST' };
    return {
      provider: 'anthropic',
      upstreamPath: '/v1/messages',
      method: 'POST',
      model: { in: 'body' },
      stream: 'body',
      usage: 'anthropic',
      auto: true,
    };
  }
  for (const rule of RULES) {
    const match = rule.pattern.exec(pathname);
    if (match === null) continue;
    if (method !== rule.method) return { refused: 'method_not_allowed', allow: rule.method };
    const params = new URLSearchParams(query === -1 ? '' : rawUrl.slice(query + 1));
    const kept = new URLSearchParams();
    for (const name of PASSED_QUERY[rule.provider]) {
      const value = params.get(name);
      if (value !== null) kept.set(name, value);
    }
    const search = kept.size === 0 ? '' : `?${kept.toString()}`;
    return {
      provider: rule.provider,
      upstreamPath: `${match[1]}${search}`,
      method: rule.method,
      model:
        rule.model === 'path'
          ? { in: 'path', name: match[2] as string }
          : rule.model === 'body'
            ? { in: 'body' }
            : { in: 'none' },
      stream: rule.stream,
      usage: rule.usage,
      auto: false,
    };
  }
  return { refused: 'path_unknown' };
}

/** The model names each provider's API accepts, as far as the gateway forwards them. */
const MODEL_NAMES: Readonly<Record<ModelProvider, RegExp>> = {
  anthropic: /^claude-[a-z0-9][a-z0-9.@-]{0,100}$/,
  // Fine-tuned models are `ft:<base>:<org>:<suffix>:<id>`.
  openai: /^(?:ft:)?(?:gpt-|o[0-9]|chatgpt-|codex-|computer-use-)[A-Za-z0-9._:-]{0,120}$/,
  google: /^(?:gemini|gemma|learnlm)-[a-z0-9][a-z0-9.-]{0,100}$/,
  xai: /^grok-[a-z0-9][a-z0-9.-]{0,100}$/,
};

export function modelServed(provider: ModelProvider, model: string): boolean {
  return MODEL_NAMES[provider].test(model);
}

/** The public API each provider is reached at unless ENCLAVE_GATEWAY_<PROVIDER>_URL says otherwise. */
export const DEFAULT_UPSTREAMS: Readonly<Record<ModelProvider, string>> = {
  anthropic: 'https://api.anthropic.com',
  openai: 'https://api.openai.com',
  google: 'https://generativelanguage.googleapis.com',
  xai: 'https://api.x.ai',
};

/** What `"model": "auto"` becomes, unless ENCLAVE_GATEWAY_<PROVIDER>_MODEL says otherwise. */
export const DEFAULT_MODELS: Readonly<Record<'anthropic' | 'openai', string>> = {
  anthropic: 'claude-sonnet-4-5',
  openai: 'gpt-4.1-mini',
};

/** The header each provider reads its key from; the key is the only header the gateway adds. */
export function keyHeader(provider: ModelProvider, key: Buffer): [name: string, value: string] {
  // The one place the key becomes a string: a header value of one request, dropped with it.
  switch (provider) {
    case 'anthropic':
      return ['x-api-key', key.toString('latin1')];
    case 'google':
      return ['x-goog-api-key', key.toString('latin1')];
    default:
      return ['authorization', `Bearer ${key.toString('latin1')}`];
  }
}

/** What the supervisor inside a sandbox needs to give the agent its gateway (supervisor.mjs). */
export interface SandboxGateway {
  /** The loopback port it bridges to /run/enclave/gateway.sock. */
  readonly port: number;
  /** Each SDK's base-URL variable, pointing at that port. */
  readonly env: Readonly<Record<string, string>>;
  /** Each SDK's key variable: the supervisor sets them to the agent's own token, never a provider key. */
  readonly keyVariables: readonly string[];
}

/** The variables that let an unmodified agent using a provider's SDK reach the gateway at `port`. */
export function sandboxGateway(port: number): SandboxGateway {
  const url = `http://127.0.0.1:${port}`;
  return {
    port,
    env: {
      ENCLAVE_GATEWAY_URL: url,
      ANTHROPIC_BASE_URL: `${url}/anthropic`,
      OPENAI_BASE_URL: `${url}/openai/v1`,
      GOOGLE_GEMINI_BASE_URL: `${url}/google`,
      XAI_BASE_URL: `${url}/xai/v1`,
    },
    keyVariables: ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'GEMINI_API_KEY', 'XAI_API_KEY'],
  };
}
