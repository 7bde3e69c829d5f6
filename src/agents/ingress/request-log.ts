import pino from 'pino';
import type { Logger } from '../../logger.ts';

// AGT-3: the ingress's one info line per request. It is on every request's
// path, so it must be cheap: its fields are fixed (kind, method, status,
// agent id, ms) and none can carry a secret — no subdomain, no path, no
// header: the subdomain is the instance's secret address — so the line is
// built as a template, byte for byte what `child.info(fields, msg)` writes
// (pino.symbols exposes the logger's parts for custom serialization: level,
// time, bindings, line end, stream), without its generic walk over the object
// or a redaction pass. The lines of one event-loop turn reach the log's
// stream in one write, at the end of the turn, in the order they were made.
// A logger that changes lines in a way the template does not follow (mixin,
// hooks, a log formatter, serializers or redaction of these fields, a nested
// key, a message prefix, a stream that wants each line's metadata) gets every
// line through its own info(), written at once as before.

export type RequestKind = 'http' | 'upgrade';

export interface RequestLog {
  /** Logs one request: its method, the status answered, the instance's agent id if one was reached, and its duration. */
  line(
    kind: RequestKind,
    method: string | undefined,
    status: number,
    agentId: string | undefined,
    ms: number,
  ): void;
  /** Writes the lines not yet written (server shutdown). */
  flush(): void;
}

const MESSAGE = 'ingress request';
const INFO = 30;
const FIELDS = ['method', 'status', 'agent_id', 'ms'];

/** The parts of a pino logger that pino.symbols names (see pino's README, "pino.symbols"). */
type Parts = Record<symbol, unknown>;
const symbols = pino.symbols as unknown as Record<string, symbol>;
const part = (log: Logger, name: string): unknown => (log as unknown as Parts)[symbols[name] ?? Symbol()];

interface Template {
  /** The line up to its time: `{"level":30`. */
  readonly start: string;
  /** The logger's time field (`,"time":…`), as it writes it. */
  readonly time: () => string;
  /** The logger's bindings (`,"service":…,"ingress":…`). */
  readonly bindings: string;
  /** The message and the end of the line. */
  readonly end: string;
}

/** The template of `log`'s request lines, or undefined when it writes lines the template does not follow. */
function templateOf(log: Logger): Template | undefined {
  const hooks = part(log, 'hooksSym') as { logMethod?: unknown; streamWrite?: unknown } | undefined;
  const formatters = part(log, 'formattersSym') as { log?: unknown } | undefined;
  const serializers = (part(log, 'serializersSym') ?? {}) as Record<string, unknown>;
  const stringifiers = (part(log, 'stringifiersSym') ?? {}) as Record<string | symbol, unknown>;
  const stream = part(log, 'streamSym') as { write?: unknown; [key: symbol]: unknown } | undefined;
  const start = (part(log, 'lsCacheSym') as Record<number, unknown> | undefined)?.[INFO];
  const chindings = part(log, 'chindingsSym');
  const end = part(log, 'endSym');
  const time = part(log, 'timeSym');
  const plain =
    hooks?.logMethod === undefined &&
    hooks?.streamWrite === undefined &&
    formatters?.log === undefined &&
    !part(log, 'mixinSym') &&
    !part(log, 'nestedKeySym') &&
    part(log, 'msgPrefixSym') === undefined &&
    part(log, 'messageKeySym') === 'msg' &&
    stringifiers[symbols.wildcardFirstSym ?? Symbol()] === undefined &&
    FIELDS.every((field) => serializers[field] === undefined && stringifiers[field] === undefined) &&
    stream !== undefined &&
    stream[Symbol.for('pino.metadata')] !== true &&
    typeof stream.write === 'function' &&
    typeof start === 'string' &&
    typeof chindings === 'string' &&
    typeof end === 'string' &&
    typeof time === 'function';
  if (!plain) return undefined;
  return { start, time: time as () => string, bindings: chindings, end: `,"msg":"${MESSAGE}"${end}` };
}

/** JSON for a value pino writes as a string; a method is a token (no quote, backslash or control character). */
function quoted(value: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]*$/.test(value) ? `"${value}"` : JSON.stringify(value);
}

/** Request lines through `logger`, bound to `{ ingress: kind }` and with no redaction pass. */
export function createRequestLog(logger: Logger): RequestLog {
  const logs = {
    http: logger.child({ ingress: 'http' }, { redact: [] }),
    upgrade: logger.child({ ingress: 'upgrade' }, { redact: [] }),
  };
  const templates = { http: templateOf(logs.http), upgrade: templateOf(logs.upgrade) };
  const stream = part(logs.http, 'streamSym') as { write(line: string): unknown } | undefined;
  let pending = '';
  let scheduled = false;

  function flush(): void {
    scheduled = false;
    if (pending === '') return;
    const lines = pending;
    pending = '';
    stream?.write(lines);
  }

  return {
    line(kind, method, status, agentId, ms) {
      const log = logs[kind];
      const template = templates[kind];
      if (template === undefined) {
        log.info({ method, status, agent_id: agentId, ms }, MESSAGE);
        return;
      }
      if (!log.isLevelEnabled('info')) return;
      // The order and form of `log.info({ method, status, agent_id, ms }, MESSAGE)`: undefined fields are left out.
      const methodField = method === undefined ? '' : `,"method":${quoted(method)}`;
      const agentField = agentId === undefined ? '' : `,"agent_id":${quoted(agentId)}`;
      pending += `${template.start}${template.time.call(log)}${template.bindings}${methodField},"status":${Number.isFinite(status) ? status : null}${agentField},"ms":${Number.isFinite(ms) ? ms : null}${template.end}`;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    flush,
  };
}
