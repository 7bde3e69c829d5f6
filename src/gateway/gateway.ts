import { randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import type { Sql } from 'postgres';
import { listenHostSocket, removeHostSocket } from '../agents/runtime/host-sockets.ts';
import type { TemplateCatalog } from '../agents/templates.ts';
import { appendAuditEvent } from '../audit/append.ts';
import { withTenant } from '../db/tenant.ts';
import { asDatabaseUnavailable, DATABASE_RETRY_AFTER_SECONDS } from '../db/timeouts.ts';
import { connectionListed, HOP_BY_HOP } from '../http/hop-by-hop.ts';
import { PROBLEM_TYPES, type ProblemCode, problemTypeUri } from '../http/problem-types.ts';
import type { Logger } from '../logger.ts';
import { hashToken, tokenKind } from '../tokens.ts';
import { type Vault, VaultError } from '../vault/service.ts';
import { AutoUnsupported, toAnthropicMessage, toChatCompletion } from './auto.ts';
import { type ModelProvider, PROVIDER_LABELS } from './provider-names.ts';
import { type GatewayRoute, keyHeader, modelServed, routeOf } from './providers.ts';
import { type CallRecorder, createCallRecorder, utcDay } from './records.ts';
import { createUsageTap, type TokenCounts } from './usage.ts';

// The model gateway (AGT-7, VLT-5). Each running instance gets a Unix socket
// of its own, `host/gateway.sock`, which its supervisor bridges to a loopback
// port inside the sandbox; the gateway is served there and nowhere else
// (never on the public port). A request on an instance's socket acts as that
// instance's agent only: the token it presents must be that agent's current
// identity token, and the agent must be starting or running.
//
// For each call the tenant's key for the provider is lent from the vault as
// a Buffer, used for one header of one upstream request, and zeroed when the
// exchange ends, fails or is aborted; it is never logged, never in an error,
// and a key changed with PUT …/credentials/:name is the one the next call
// reads. Bodies and streamed answers pass through byte for byte; only the
// authentication header is replaced.

export interface GatewayIdentity {
  readonly tenantId: string;
  readonly agentId: string;
}

export interface GatewayListener {
  close(): Promise<void>;
}

export interface GatewayDeps {
  readonly sql: Sql;
  readonly vault: Pick<Vault, 'lendCredentialAlone'>;
  readonly templates: TemplateCatalog;
  readonly logger: Logger;
  /** Each provider's API base URL (ENCLAVE_GATEWAY_<PROVIDER>_URL). */
  readonly upstreams: Readonly<Record<ModelProvider, string>>;
  /** What `"model": "auto"` becomes per provider (ENCLAVE_GATEWAY_<PROVIDER>_MODEL). */
  readonly autoModels: Readonly<Record<'anthropic' | 'openai', string>>;
  /** Longest wait for the upstream's answer, and between two of its chunks (ENCLAVE_GATEWAY_TIMEOUT_MS). */
  readonly timeoutMs: number;
  /** Called with each lent key once it has been zeroed: tests watch the zeroing. */
  readonly onKeyReturned?: (key: Buffer) => void;
}

/** The largest request body (a prompt with images fits); a larger one is refused with 413 before any upstream call. */
export const MAX_REQUEST_BYTES = 10 * 1024 * 1024;
/** Calls in flight per instance; the next answers 503 gateway_busy. */
export const MAX_CALLS_PER_INSTANCE = 64;
/** Request bytes one instance may have buffered at once: memory stays bounded however many calls it opens. */
export const MAX_BUFFERED_BYTES = 32 * 1024 * 1024;
/** Connections to one instance's socket (idle keep-alives included); beyond it the socket is dropped. */
const MAX_CONNECTIONS = 8 * MAX_CALLS_PER_INSTANCE;
/** After a 413, what the client still sends is read and dropped, up to this much; then the connection is cut. */
const MAX_DISCARDED_BYTES = 4 * MAX_REQUEST_BYTES;
/** How long the agent's row (limits, which keys exist) is reused before it is read again. */
const FACTS_TTL_MS = 1000;
/** A translated (auto → OpenAI) answer is read whole; past this it is refused as unreachable. */
const MAX_TRANSLATED_BYTES = 4 * 1024 * 1024;

/** Request headers the gateway sets or refuses to pass on, besides the hop-by-hop ones (http/hop-by-hop.ts). */
const SET_BY_GATEWAY = new Set([
  'host',
  'content-length',
  'expect',
  // The agent's token, in whichever header its SDK sends a key in, and anything else that authenticates.
  'authorization',
  'x-api-key',
  'x-goog-api-key',
  'cookie',
  // Answers are read for usage as they pass: asked for unencoded.
  'accept-encoding',
  'forwarded',
  'via',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
]);
/** Response headers that are the provider's own business with its direct clients, besides the hop-by-hop ones. */
const PROVIDER_ONLY = new Set(['set-cookie', 'alt-svc']);

class Refusal extends Error {
  readonly status: number;
  readonly code: ProblemCode;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, code: ProblemCode, detail: string, headers: Record<string, string> = {}) {
    super(detail);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

function sendProblem(res: http.ServerResponse, refusal: Refusal, requestId: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify({
    type: problemTypeUri(refusal.code),
    title: PROBLEM_TYPES[refusal.code].title,
    status: refusal.status,
    detail: refusal.message,
    code: refusal.code,
    request_id: requestId,
  });
  res.writeHead(refusal.status, {
    'content-type': 'application/problem+json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...refusal.headers,
  });
  res.end(body);
}

/**
 * Reads and drops the rest of a refused body before the refusal is sent, so
 * the client reads it instead of a reset (a client that asked to close the
 * connection would otherwise meet a closed socket while still sending); one
 * that keeps sending past the bound loses its connection. The server's
 * request timeout bounds a slow one.
 */
function discardRest(req: http.IncomingMessage): Promise<void> {
  return new Promise((resolve) => {
    let discarded = 0;
    req.on('data', (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > MAX_DISCARDED_BYTES) req.socket.destroy();
    });
    req.once('end', resolve);
    req.once('close', resolve);
    req.resume();
    if (req.readableEnded) resolve();
  });
}

/** The token the agent presented, in whichever header (or Google `key` parameter) its SDK sends a key in. */
function presentedToken(req: http.IncomingMessage): string | undefined {
  const apiKey = req.headers['x-api-key'];
  if (typeof apiKey === 'string' && apiKey !== '') return apiKey.trim();
  const authorization = req.headers.authorization;
  if (typeof authorization === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    if (match !== null) return match[1];
  }
  const google = req.headers['x-goog-api-key'];
  if (typeof google === 'string' && google !== '') return google.trim();
  const query = (req.url ?? '').indexOf('?');
  if (query !== -1) return new URLSearchParams((req.url ?? '').slice(query + 1)).get('key') ?? undefined;
  return undefined;
}

interface Instance {
  readonly identity: GatewayIdentity;
  readonly recorder: CallRecorder;
  readonly log: Logger;
  /** Admission times of the last minute's calls (requests-per-minute limit). */
  readonly window: number[];
  /** `provider hour` pairs whose gateway.key_used event this process knows is written. */
  readonly hours: Set<string>;
  readonly sockets: Set<net.Socket>;
  active: number;
  buffered: number;
  facts?: { readonly row: AgentRow; readonly at: number } | undefined;
  /** Tokens the agent has used today (UTC), as the daily limit counts them. */
  today?: { readonly day: string; tokens: number } | undefined;
}

/** What the agent asked for, once its body is read and checked. */
interface Call {
  readonly route: GatewayRoute;
  readonly body: Buffer;
  readonly json: Record<string, unknown> | undefined;
  readonly model: string;
  readonly stream: boolean;
}

interface Lent {
  readonly provider: ModelProvider;
  readonly model: string;
  readonly key: Buffer;
  /** The auto request goes to OpenAI, translated (auto.ts). */
  readonly translate: boolean;
}

interface AgentRow {
  identity_token_hash: string | null;
  template_id: string;
  model_requests_per_minute: number | null;
  model_tokens_per_day: number | null;
  state: string;
  desired_state: string;
  credentials: string[];
}

export function createGateway(deps: GatewayDeps) {
  const instances = new WeakMap<net.Socket, Instance>();
  const keepAlive = { keepAlive: true, maxSockets: 256, maxFreeSockets: 32 };
  const agents = { http: new http.Agent(keepAlive), https: new https.Agent(keepAlive) };
  const server = http.createServer(
    { requestTimeout: 60_000, headersTimeout: 30_000, keepAliveTimeout: 5_000, maxHeaderSize: 16 * 1024 },
    (req, res) => {
      const instance = instances.get(req.socket);
      if (instance === undefined) {
        res.destroy();
        return;
      }
      const requestId = randomUUID();
      serve(instance, req, res, requestId).catch((error: unknown) => {
        if (error instanceof Refusal) {
          sendProblem(res, error, requestId);
          return;
        }
        const unavailable = asDatabaseUnavailable(error);
        if (unavailable !== undefined) {
          sendProblem(
            res,
            new Refusal(503, 'database_unavailable', 'the database did not answer; retry later', {
              'retry-after': String(DATABASE_RETRY_AFTER_SECONDS),
            }),
            requestId,
          );
          return;
        }
        instance.log.error(
          { requestId, err: { code: (error as { code?: unknown }).code } },
          'model gateway call failed',
        );
        sendProblem(res, new Refusal(500, 'internal', 'the gateway failed; see the server log'), requestId);
      });
    },
  );
  // A request Node's parser refuses (bad bytes, a head over 16 KiB): a problem, then the connection ends.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const tooLarge = error.code === 'HPE_HEADER_OVERFLOW';
    const status = tooLarge ? 431 : 400;
    const body = JSON.stringify({
      type: problemTypeUri('bad_request'),
      title: tooLarge ? 'Request header fields too large' : PROBLEM_TYPES.bad_request.title,
      status,
      code: 'bad_request',
      request_id: randomUUID(),
    });
    socket.end(
      `HTTP/1.1 ${status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}\r\n` +
        `content-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });

  async function serve(
    instance: Instance,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    requestId: string,
  ) {
    const started = performance.now();
    const route = routeOf(req.method ?? '', req.url ?? '');
    if ('refused' in route) {
      if (route.refused === 'method_not_allowed') {
        throw new Refusal(405, 'method_not_allowed', `this path takes ${route.allow}`, {
          allow: route.allow,
        });
      }
      throw new Refusal(
        404,
        'not_found',
        'the model gateway serves /anthropic/v1/messages, /openai/v1/chat/completions, /openai/v1/responses, /openai/v1/models, /google/v1beta/models/{model}:generateContent, /xai/v1/chat/completions and /v1/messages',
      );
    }
    const token = presentedToken(req);
    if (token === undefined || tokenKind(token) !== 'agent') {
      throw new Refusal(
        401,
        'agent_token_invalid',
        "send this agent's token (ENCLAVE_AGENT_TOKEN) as the API key",
      );
    }
    if (instance.active >= MAX_CALLS_PER_INSTANCE) {
      throw new Refusal(503, 'gateway_busy', `at most ${MAX_CALLS_PER_INSTANCE} calls at once per agent`, {
        'retry-after': '1',
      });
    }
    instance.active++;
    try {
      const call = await readCall(instance, req, route);
      if (call === undefined) return;
      const lent = await lend(instance, token, call);
      let body: Buffer;
      try {
        body = upstreamBody(call, lent);
      } catch (error) {
        returnKey(lent.key);
        if (!(error instanceof AutoUnsupported)) throw error;
        throw new Refusal(400, 'auto_unsupported', `"auto" through OpenAI: ${error.message}`);
      }
      if (res.destroyed) {
        // The agent left while its call was being checked: no upstream call.
        returnKey(lent.key);
        return;
      }
      await forward(instance, req, res, call, lent, body, started, requestId);
    } finally {
      instance.active--;
    }
  }

  /** Reads and checks the body; undefined when the client left while sending it. */
  async function readCall(
    instance: Instance,
    req: http.IncomingMessage,
    route: GatewayRoute,
  ): Promise<Call | undefined> {
    const declared = Number(req.headers['content-length'] ?? 0);
    const tooLarge = new Refusal(413, 'body_too_large', `the body is over ${MAX_REQUEST_BYTES} bytes`);
    if (declared > MAX_REQUEST_BYTES) {
      await discardRest(req);
      throw tooLarge;
    }
    const chunks: Buffer[] = [];
    const read = await new Promise<'done' | 'gone' | Refusal>((resolve) => {
      let size = 0;
      const stop = (outcome: 'done' | 'gone' | Refusal) => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('close', onClose);
        instance.buffered -= size;
        if (outcome instanceof Refusal) void discardRest(req).then(() => resolve(outcome));
        else resolve(outcome);
      };
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        instance.buffered += chunk.length;
        if (size > MAX_REQUEST_BYTES) stop(tooLarge);
        else if (instance.buffered > MAX_BUFFERED_BYTES) {
          stop(
            new Refusal(503, 'gateway_busy', 'the agent has too many request bytes in flight', {
              'retry-after': '1',
            }),
          );
        } else chunks.push(chunk);
      };
      const onEnd = () => stop('done');
      const onClose = () => stop('gone'); // the client went away mid-body
      req.on('data', onData);
      req.once('end', onEnd);
      req.once('close', onClose);
    });
    if (read instanceof Refusal) throw read;
    if (read === 'gone') return undefined;
    const body = Buffer.concat(chunks);
    if (route.method === 'GET') return { route, body, json: undefined, model: 'models', stream: false };
    let json: unknown;
    try {
      json = JSON.parse(body.toString('utf8'));
    } catch {
      throw new Refusal(400, 'malformed_body', 'the body is not JSON');
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new Refusal(400, 'malformed_body', 'the body must be a JSON object');
    }
    const object = json as Record<string, unknown>;
    const model = route.model.in === 'path' ? route.model.name : object.model;
    if (typeof model !== 'string' || model === '') {
      throw new Refusal(400, 'model_not_served', 'the body names no model');
    }
    if (!(route.auto && model === 'auto') && !modelServed(route.provider, model)) {
      throw new Refusal(
        400,
        'model_not_served',
        `"${model.slice(0, 64)}" is not a ${PROVIDER_LABELS[route.provider]} model the gateway serves`,
      );
    }
    const stream = route.stream === 'path' || (route.stream === 'body' && object.stream === true);
    return { route, body, json: object, model, stream };
  }

  /** Checks the token, the instance and the limits, then lends the key: one tenant transaction. */
  /**
   * The agent's row as the checks read it, at most FACTS_TTL_MS old: only a
   * change of limits or of which keys exist waits that long, since the token
   * and the state change only with a restart, which closes this socket. The
   * day's tokens are read once a day and then counted here: this process is
   * the only one that serves this instance.
   */
  async function factsOf(instance: Instance, day: string): Promise<AgentRow> {
    const now = Date.now();
    if (
      instance.facts !== undefined &&
      now - instance.facts.at < FACTS_TTL_MS &&
      instance.today?.day === day
    ) {
      return instance.facts.row;
    }
    const { tenantId, agentId } = instance.identity;
    const row = await withTenant(deps.sql, tenantId, async (tx) => {
      const [agent] = await tx<(AgentRow & { tokens_today: number })[]>`
        select a.identity_token_hash, a.template_id, a.model_requests_per_minute,
               a.model_tokens_per_day::float8 as model_tokens_per_day, i.state, i.desired_state,
               array(select c.name from credentials c where c.agent_id = a.id) as credentials,
               (select coalesce(sum(u.input_tokens + u.output_tokens), 0)::float8 from gateway_usage_daily u
                 where u.agent_id = a.id and u.day = ${day}::date) as tokens_today
        from agents a join agent_instances i on i.agent_id = a.id
        where a.id = ${agentId}::uuid`;
      return agent;
    });
    if (row === undefined) {
      instance.facts = undefined;
      throw new Refusal(401, 'agent_token_invalid', "this is not the token of this instance's agent");
    }
    if (instance.today?.day !== day) {
      instance.today = { day, tokens: row.tokens_today + instance.recorder.pendingTokens(day) };
    }
    instance.facts = { row, at: now };
    return row;
  }

  /** Checks the token, the instance and the limits, then lends the key in a tenant transaction of its own. */
  async function lend(instance: Instance, token: string, call: Call): Promise<Lent> {
    const { tenantId, agentId } = instance.identity;
    const now = new Date();
    const agent = await factsOf(instance, utcDay(now));
    const presented = hashToken(token);
    const stored =
      agent.identity_token_hash === null ? undefined : Buffer.from(agent.identity_token_hash, 'hex');
    if (stored === undefined || stored.length !== presented.length || !timingSafeEqual(presented, stored)) {
      throw new Refusal(401, 'agent_token_invalid', "this is not the token of this instance's agent");
    }
    if (agent.desired_state !== 'running' || (agent.state !== 'running' && agent.state !== 'starting')) {
      throw new Refusal(403, 'agent_not_running', 'the agent is not running');
    }
    const target = chooseProvider(agent, call);
    checkLimits(instance, agent, call, now);
    let key: Buffer | undefined;
    try {
      key = await deps.vault.lendCredentialAlone(
        deps.sql,
        { tenantId, agentId, name: target.credential },
        (plaintext) => Buffer.from(plaintext),
      );
      await recordKeyUse(instance, target.provider, target.model, now);
      return { provider: target.provider, model: target.model, key, translate: target.translate };
    } catch (error) {
      key?.fill(0);
      if (error instanceof VaultError && error.code === 'not_found') {
        instance.facts = undefined;
        throw new Refusal(
          409,
          'provider_key_missing',
          `the agent has no ${PROVIDER_LABELS[target.provider]} key`,
        );
      }
      throw error;
    }
  }

  function chooseProvider(agent: AgentRow, call: Call) {
    const template = deps.templates.get(agent.template_id);
    const credentialFor = (provider: ModelProvider) =>
      template?.credentials.find((c) => c.provider === provider && agent.credentials.includes(c.name))?.name;
    if (call.route.auto && call.model === 'auto') {
      const anthropic = credentialFor('anthropic');
      if (anthropic !== undefined) {
        return {
          provider: 'anthropic' as const,
          credential: anthropic,
          model: deps.autoModels.anthropic,
          translate: false,
        };
      }
      const openai = credentialFor('openai');
      if (openai !== undefined) {
        return {
          provider: 'openai' as const,
          credential: openai,
          model: deps.autoModels.openai,
          translate: true,
        };
      }
      throw new Refusal(409, 'provider_key_missing', 'the agent has no Anthropic or OpenAI key for "auto"');
    }
    const provider = call.route.provider;
    const credential = credentialFor(provider);
    if (credential === undefined) {
      throw new Refusal(409, 'provider_key_missing', `the agent has no ${PROVIDER_LABELS[provider]} key`);
    }
    return { provider, credential, model: call.model, translate: false };
  }

  function checkLimits(instance: Instance, agent: AgentRow, call: Call, now: Date): void {
    const perMinute = agent.model_requests_per_minute;
    const window = instance.window;
    while (window.length > 0 && (window[0] as number) <= now.getTime() - 60_000) window.shift();
    if (perMinute !== null && window.length >= perMinute) {
      const wait = Math.max(1, Math.ceil(((window[0] as number) + 60_000 - now.getTime()) / 1000));
      throw new Refusal(429, 'rate_limited', `the agent's limit is ${perMinute} model calls a minute`, {
        'retry-after': String(wait),
      });
    }
    const perDay = agent.model_tokens_per_day;
    if (perDay !== null) {
      if ((instance.today?.tokens ?? 0) >= perDay) {
        const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
        throw new Refusal(429, 'token_limit_reached', `the agent's limit is ${perDay} tokens a day (UTC)`, {
          'retry-after': String(Math.max(1, Math.ceil((midnight - now.getTime()) / 1000))),
        });
      }
      const options = call.json?.stream_options as { include_usage?: unknown } | undefined;
      if (call.stream && call.route.usage === 'openai-chat' && options?.include_usage !== true) {
        throw new Refusal(400, 'usage_required', 'set stream_options.include_usage to true');
      }
    }
    window.push(now.getTime());
  }

  /** The first call of each hour per agent and provider appends gateway.key_used (never the key). */
  async function recordKeyUse(instance: Instance, provider: ModelProvider, model: string, now: Date) {
    const hour = new Date(Math.floor(now.getTime() / 3_600_000) * 3_600_000);
    const mark = `${provider} ${hour.getTime()}`;
    if (instance.hours.has(mark)) return;
    const { tenantId, agentId } = instance.identity;
    await withTenant(deps.sql, tenantId, async (tx) => {
      const inserted = await tx`
        insert into gateway_key_hours (tenant_id, agent_id, provider, hour)
        values (${tenantId}::uuid, ${agentId}::uuid, ${provider}, ${hour.toISOString()}::timestamptz)
        on conflict do nothing returning 1`;
      if (inserted.length === 0) return;
      await appendAuditEvent(tx, tenantId, {
        actor: `agent:${agentId}`,
        action: 'gateway.key_used',
        target: `agent:${agentId}`,
        data: { provider, model, hour: hour.toISOString() },
      });
    });
    // Another process may insert the same hour meanwhile: the primary key keeps the event to one.
    instance.hours.add(mark);
    if (instance.hours.size > 64) instance.hours.clear();
  }

  function returnKey(key: Buffer): void {
    key.fill(0);
    deps.onKeyReturned?.(key);
  }

  function upstreamBody(call: Call, lent: Lent): Buffer {
    if (lent.translate) {
      return Buffer.from(JSON.stringify(toChatCompletion(call.json ?? {}, lent.model)));
    }
    if (call.route.auto && call.model === 'auto')
      return Buffer.from(JSON.stringify({ ...call.json, model: lent.model }));
    return call.body;
  }

  function upstreamHeaders(req: http.IncomingMessage, lent: Lent, length: number): http.OutgoingHttpHeaders {
    const headers: http.OutgoingHttpHeaders = {};
    if (lent.translate) {
      headers['content-type'] = 'application/json';
    } else {
      const raw = req.rawHeaders;
      const listed = connectionListed(raw);
      for (let i = 0; i + 1 < raw.length; i += 2) {
        const name = (raw[i] as string).toLowerCase();
        if (
          HOP_BY_HOP.has(name) ||
          listed.has(name) ||
          SET_BY_GATEWAY.has(name) ||
          name.startsWith('proxy-')
        ) {
          continue;
        }
        const value = raw[i + 1] as string;
        const existing = headers[name];
        headers[name] = existing === undefined ? value : `${String(existing)}, ${value}`;
      }
    }
    headers['accept-encoding'] = 'identity';
    if (length > 0 || req.method === 'POST') headers['content-length'] = length;
    const [name, value] = keyHeader(lent.provider, lent.key);
    headers[name] = value;
    return headers;
  }

  function forward(
    instance: Instance,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    call: Call,
    lent: Lent,
    body: Buffer,
    started: number,
    requestId: string,
  ): Promise<void> {
    const provider = lent.provider;
    const label = PROVIDER_LABELS[provider];
    const base = deps.upstreams[provider].replace(/\/+$/, '');
    const upstreamPath = lent.translate ? '/v1/chat/completions' : call.route.upstreamPath;
    const url = new URL(`${base}${upstreamPath}`);
    return new Promise<void>((resolve) => {
      let status = 0;
      let tokens: TokenCounts | undefined;
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        returnKey(lent.key);
        const latencyMs = performance.now() - started;
        const at = new Date();
        if (tokens !== undefined && instance.today?.day === utcDay(at))
          instance.today.tokens += tokens.input + tokens.output;
        instance.recorder.record({
          provider,
          model: lent.model,
          status,
          tokens,
          latencyMs,
          streamed: call.stream,
          at,
        });
        instance.log.info(
          { requestId, provider, model: lent.model, status, ms: Math.round(latencyMs) },
          'model call',
        );
        resolve();
      };
      let upstream: http.ClientRequest;
      try {
        upstream = (url.protocol === 'https:' ? https : http).request(url, {
          method: call.route.method,
          headers: upstreamHeaders(req, lent, body.length),
          agent: url.protocol === 'https:' ? agents.https : agents.http,
        });
      } catch {
        // A key that is not a valid header value: the error names the header, and so does this.
        sendProblem(
          res,
          new Refusal(502, 'upstream_unreachable', `the ${label} key is not a valid API key`),
          requestId,
        );
        end();
        return;
      }
      upstream.setTimeout(deps.timeoutMs, () => upstream.destroy(new Error('timeout')));
      res.once('close', () => {
        if (!res.writableFinished) upstream.destroy();
        end();
      });
      upstream.once('error', (error) => {
        if (!res.headersSent) {
          const timedOut = error.message === 'timeout';
          sendProblem(
            res,
            timedOut
              ? new Refusal(504, 'upstream_timeout', `${label} did not answer in time`)
              : new Refusal(502, 'upstream_unreachable', `${label} could not be reached`),
            requestId,
          );
        } else {
          res.destroy();
        }
        end();
      });
      upstream.once('response', (answer) => {
        status = answer.statusCode ?? 0;
        const tap = createUsageTap(
          lent.translate ? 'openai-chat' : call.route.usage,
          answer.headers['content-type'],
        );
        if (lent.translate && status === 200) {
          translateAnswer(res, answer, tap, label, requestId, (counts) => {
            tokens = counts;
          });
          return;
        }
        const raw = answer.rawHeaders;
        const listed = connectionListed(raw);
        const headers: string[] = [];
        for (let i = 0; i + 1 < raw.length; i += 2) {
          const name = (raw[i] as string).toLowerCase();
          if (HOP_BY_HOP.has(name) || listed.has(name) || PROVIDER_ONLY.has(name)) continue;
          headers.push(raw[i] as string, raw[i + 1] as string);
        }
        res.writeHead(status, headers);
        answer.on('data', (chunk: Buffer) => tap.write(chunk));
        answer.once('end', () => {
          tokens = tap.end();
        });
        answer.once('error', () => res.destroy());
        answer.pipe(res);
      });
      upstream.end(body);
    });
  }

  function translateAnswer(
    res: http.ServerResponse,
    answer: http.IncomingMessage,
    tap: ReturnType<typeof createUsageTap>,
    label: string,
    requestId: string,
    counted: (tokens: TokenCounts | undefined) => void,
  ): void {
    const chunks: Buffer[] = [];
    let size = 0;
    answer.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_TRANSLATED_BYTES) chunks.push(chunk);
      tap.write(chunk);
    });
    answer.once('error', () => res.destroy());
    answer.once('end', () => {
      counted(tap.end());
      let message: Record<string, unknown> | undefined;
      try {
        message =
          size > MAX_TRANSLATED_BYTES
            ? undefined
            : toAnthropicMessage(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        message = undefined;
      }
      if (message === undefined) {
        sendProblem(
          res,
          new Refusal(502, 'upstream_unreachable', `${label} answered with no completion`),
          requestId,
        );
        return;
      }
      const text = JSON.stringify(message);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  }

  async function listen(socketPath: string, identity: GatewayIdentity): Promise<GatewayListener> {
    const instance: Instance = {
      identity,
      recorder: createCallRecorder(deps, identity),
      log: deps.logger.child({
        component: 'gateway',
        agentId: identity.agentId,
        tenantId: identity.tenantId,
      }),
      window: [],
      hours: new Set(),
      sockets: new Set(),
      active: 0,
      buffered: 0,
    };
    const listener = net.createServer((socket) => {
      if (instance.sockets.size >= MAX_CONNECTIONS) {
        socket.destroy();
        return;
      }
      instance.sockets.add(socket);
      socket.once('close', () => instance.sockets.delete(socket));
      instances.set(socket, instance);
      server.emit('connection', socket);
    });
    // Mode 0666: the sandbox's own uid connects through a read-only bind (as with egress.sock).
    await listenHostSocket(path.dirname(socketPath), path.basename(socketPath), 0o666, listener);
    let closing: Promise<void> | undefined;
    return {
      close() {
        closing ??= (async () => {
          const stopped = new Promise<void>((resolve) => listener.close(() => resolve()));
          for (const socket of instance.sockets) socket.destroy();
          await removeHostSocket(socketPath);
          await stopped;
          await instance.recorder.drain();
        })();
        return closing;
      },
    };
  }

  return {
    listen,
    /** Ends the upstream connection pools (each instance's listener is closed by its own close()). */
    close(): void {
      agents.http.destroy();
      agents.https.destroy();
      server.close();
    },
  };
}

export type Gateway = ReturnType<typeof createGateway>;
