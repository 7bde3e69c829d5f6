import { createHash } from 'node:crypto';
import { CanonicalScanner, hasRawControl, parseCanonicalJsonText } from './canonical-text.ts';
import { AuditError } from './errors.ts';
import { eventFieldsProblem, eventHeaderProblem, type KnownFields } from './event-fields.ts';
import { canonicalJson, type JsonObject } from './jcs.ts';

// An audit event and its hash (AUD-2). The hashed bytes are the record:
//
//   canonical = JCS({ v: 1, tenant, seq, ts, actor, action, target, data })
//   hash      = SHA-256(prev_hash ‖ UTF-8(canonical)), prev_hash of seq 1 = 32 zero bytes
//
// Terminology: a tenant's *chain* is its events in seq order 1, 2, 3, …; the
// *head* is the last event's (seq, hash). docs/audit-format.md is the spec.

/** What a caller supplies to record an event. */
export interface AuditEventFields {
  /** The tenant's id, a lowercase UUID. */
  readonly tenant: string;
  /** Position in the tenant's chain: 1, 2, 3, … with no gaps. */
  readonly seq: number;
  /** When it happened, RFC 3339 UTC with milliseconds: `2026-11-21T16:12:38.257Z` (see formatEventTime). */
  readonly ts: string;
  /** Who acted: `user:<uuid>`, `token:<uuid>`, `system`, `anonymous`, … (printable ASCII, no spaces). */
  readonly actor: string;
  /** What happened, lowercase dotted: `session.login`, `invite.created`, … */
  readonly action: string;
  /** What it happened to (free text, no control characters), or null. */
  readonly target: string | null;
  /** Details, a JSON object (anything canonicalJson accepts). */
  readonly data: Readonly<Record<string, unknown>>;
}

/** An event without its data: what a verifier reports. */
export type AuditEventHeader = Omit<AuditEventFields, 'data'>;

/** An event read back from its canonical text. */
export interface AuditEvent extends AuditEventFields {
  readonly v: typeof EVENT_FORMAT_VERSION;
  readonly data: JsonObject;
}

export const EVENT_FORMAT_VERSION = 1;
/** prev_hash of seq 1. Shared: never write into it. */
export const GENESIS_HASH: Buffer = Buffer.alloc(32);
export const HASH_LENGTH = 32;

const EVENT_KEYS = ['action', 'actor', 'data', 'seq', 'target', 'tenant', 'ts', 'v'] as const;

/** The canonical text of an event, after checking every field (AuditError `event_invalid`, `jcs_unrepresentable`). */
export function canonicalEvent(fields: AuditEventFields): string {
  const problem = eventFieldsProblem(fields);
  if (problem !== undefined) throw new AuditError('event_invalid', `audit event ${problem}`);
  const { tenant, seq, ts, actor, action, target, data } = fields;
  return canonicalJson({ v: EVENT_FORMAT_VERSION, tenant, seq, ts, actor, action, target, data });
}

/** The canonical text of an event cut around its seq and ts: see canonicalEventParts. */
export interface CanonicalEventParts {
  /** `{"action":…,"actor":…,"data":…,"seq":` */
  readonly beforeSeq: string;
  /** `,"target":…,"tenant":"…","ts":"` */
  readonly beforeTs: string;
  /** `","v":1}` */
  readonly afterTs: string;
}

// Stand-ins spliced out again; any valid seq and ts would do.
const PARTS_SEQ = 1;
const PARTS_TS = '2000-01-01T00:00:00.000Z';
const AFTER_TS = `","v":${EVENT_FORMAT_VERSION}}`;

/**
 * The canonical text of an event whose seq and ts are not known yet (the
 * database chooses them, src/db/migrations/0006_audit_append_one_trip.sql),
 * cut so that `beforeSeq + seq + beforeTs + ts + afterTs` is
 * canonicalEvent({ ...fields, seq, ts }) for any valid seq and ts. JCS sorts
 * the members (action, actor, data, seq, target, tenant, ts, v) and a seq or
 * ts needs no escaping, so the two are cut out of canonicalEvent's own text.
 * Checks every field as canonicalEvent does (AuditError `event_invalid`).
 */
export function canonicalEventParts(fields: Omit<AuditEventFields, 'seq' | 'ts'>): CanonicalEventParts {
  const { tenant, actor, action, target, data } = fields;
  const text = canonicalEvent({ tenant, seq: PARTS_SEQ, ts: PARTS_TS, actor, action, target, data });
  // The members after data, as canonicalEvent must have written them; checked, not assumed.
  const beforeTs = `,"target":${canonicalJson(target)},"tenant":${canonicalJson(tenant)},"ts":"`;
  const tail = `,"seq":${PARTS_SEQ}${beforeTs}${PARTS_TS}${AFTER_TS}`;
  if (!text.endsWith(tail)) {
    throw new AuditError('event_invalid', 'audit event canonical text did not cut around seq and ts');
  }
  const beforeSeq = text.slice(0, text.length - tail.length + ',"seq":'.length);
  return { beforeSeq, beforeTs, afterTs: AFTER_TS };
}

/** SHA-256(prev ‖ UTF-8(canonical)). */
export function eventHash(prev: Uint8Array, canonical: string): Buffer {
  if (prev.length !== HASH_LENGTH) throw new AuditError('event_invalid', 'prev_hash must be 32 bytes');
  return createHash('sha256').update(prev).update(canonical, 'utf8').digest();
}

/** The timestamp form events use: RFC 3339 UTC with milliseconds. */
export function formatEventTime(date: Date): string {
  return date.toISOString();
}

/**
 * Reads an event back from the text that was hashed, checking every field
 * as strictly as canonicalEvent does and that the text is exactly canonical.
 * Throws AuditError `event_invalid` (not JSON, wrong keys or field types) or
 * `jcs_not_canonical`.
 */
export function parseCanonicalEvent(canonical: string): AuditEvent {
  // Attacker-controlled: the whole text (a tampered export or database row).
  // Invariant: what is returned is exactly what the hash covers.
  const value = parseCanonicalJsonText(canonical);
  if (value === undefined) {
    // Not canonical: say whether it is not an event at all, or an event written another way.
    let loose: unknown;
    try {
      loose = JSON.parse(canonical);
    } catch (cause) {
      throw new AuditError('event_invalid', 'audit event text is not JSON', { cause });
    }
    assertEventShape(loose);
    throw new AuditError('jcs_not_canonical', 'audit event text is not in canonical (JCS) form');
  }
  assertEventShape(value);
  return value;
}

function assertEventShape(value: unknown): asserts value is AuditEvent {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new AuditError('event_invalid', 'audit event text is not a JSON object');
  }
  if (!hasExactlyEventKeys(value)) {
    throw new AuditError('event_invalid', `audit event must have exactly the keys ${EVENT_KEYS.join(', ')}`);
  }
  const event = value as AuditEvent;
  if (event.v !== EVENT_FORMAT_VERSION) {
    throw new AuditError('event_invalid', `audit event has unknown format version ${String(event.v)}`);
  }
  const problem = eventFieldsProblem(event);
  if (problem !== undefined) throw new AuditError('event_invalid', `audit event ${problem}`);
}

/**
 * The verifier's fast reader: the event when `canonical` is exactly the
 * canonical text of a valid event, else undefined (and parseCanonicalEvent
 * says why). One pass over the text checks its form and fields, and one
 * search of `data` its characters; `data` is only built when first read. `known`, field values the caller
 * has already validated (the chain's tenant, the previous event's actor and
 * action), spares re-checking their syntax.
 */
export function readCanonicalEvent(canonical: string, known?: KnownFields): AuditEvent | undefined {
  // Attacker-controlled: the whole text. Invariant: accepted only if parseCanonicalEvent would accept it.
  // A raw control character is never canonical. Only `data` is searched for one (a search costs
  // by the character): in any other string, its field's rule in eventHeaderProblem refuses one,
  // and a value in `known` has passed that rule before.
  const scanner = CanonicalScanner.leavingControls(canonical);
  if (scanner === undefined) return undefined;
  const reader = new EventTextReader(scanner);
  // Canonical order is alphabetical, so the eight keys appear exactly like this.
  const action = reader.key('{"action":') ? reader.string() : undefined;
  const actor = reader.key(',"actor":') ? reader.string() : undefined;
  const data = reader.key(',"data":') && reader.objectWithoutControls();
  const seq = reader.key(',"seq":') ? reader.number() : undefined;
  const target = !reader.key(',"target":') ? undefined : reader.key('null') ? null : reader.string();
  const tenant = reader.key(',"tenant":') ? reader.string() : undefined;
  const ts = reader.key(',"ts":') ? reader.string() : undefined;
  const end = reader.key(',"v":1}') && reader.at === canonical.length;
  if (!end || !data || action === undefined || actor === undefined || seq === undefined) return undefined;
  if (target === undefined || tenant === undefined || ts === undefined) return undefined;
  const event = new VerifiedEvent({ tenant, seq, ts, actor, action, target }, canonical);
  return eventHeaderProblem(event, known) === undefined ? event : undefined;
}

/**
 * An event from readCanonicalEvent. `data` is a getter that parses the
 * (already verified) text on first read, so a verifier that never looks at
 * it does not pay for it; spreading the object drops it (JSON.stringify keeps
 * it), so use parseCanonicalEvent where a plain object is wanted.
 */
class VerifiedEvent implements AuditEvent {
  readonly v = EVENT_FORMAT_VERSION;
  readonly tenant: string;
  readonly seq: number;
  readonly ts: string;
  readonly actor: string;
  readonly action: string;
  readonly target: string | null;
  readonly #canonical: string;
  #data: JsonObject | undefined;

  constructor(header: AuditEventHeader, canonical: string) {
    this.tenant = header.tenant;
    this.seq = header.seq;
    this.ts = header.ts;
    this.actor = header.actor;
    this.action = header.action;
    this.target = header.target;
    this.#canonical = canonical;
  }

  get data(): JsonObject {
    this.#data ??= (parseCanonicalJsonText(this.#canonical) as unknown as AuditEvent).data;
    return this.#data;
  }

  toJSON(): AuditEvent {
    return { ...this, data: this.data };
  }
}

/**
 * A cursor over canonical event text. Each method reads at the cursor and
 * returns undefined/false when the text does not match there; after a
 * mismatch the cursor stays put or becomes -1, so later reads fail too.
 */
class EventTextReader {
  at = 0;
  readonly #scanner: CanonicalScanner;

  constructor(scanner: CanonicalScanner) {
    this.#scanner = scanner;
  }

  key(literal: string): boolean {
    if (this.at < 0 || !this.#scanner.text.startsWith(literal, this.at)) return false;
    this.at += literal.length;
    return true;
  }

  string(): string | undefined {
    const scanner = this.#scanner;
    const end = this.at < 0 ? -1 : scanner.skipString(this.at);
    if (end < 0) return undefined;
    const start = this.at;
    this.at = end;
    if (scanner.lastStringEscaped) return JSON.parse(scanner.text.slice(start, end)) as string;
    return scanner.text.slice(start + 1, end - 1);
  }

  number(): number | undefined {
    const end = this.at < 0 ? -1 : this.#scanner.skipNumber(this.at);
    if (end < 0) return undefined;
    const value = Number(this.#scanner.text.slice(this.at, end));
    this.at = end;
    return value;
  }

  /** Skips a canonical object one level below the top, with no raw control character in it. */
  objectWithoutControls(): boolean {
    const start = this.at;
    if (this.#scanner.text.charCodeAt(start) !== 0x7b) return false;
    this.at = this.#scanner.skipValue(start, 1);
    return this.at >= 0 && !hasRawControl(this.#scanner.text, start, this.at);
  }
}

function hasExactlyEventKeys(value: object): boolean {
  const keys = Object.keys(value);
  if (keys.length !== EVENT_KEYS.length) return false;
  // Canonical text lists them in this order; otherwise compare as sets (the order is refused later).
  if (keys.every((key, i) => key === EVENT_KEYS[i])) return true;
  const sorted = keys.toSorted();
  return EVENT_KEYS.every((key, i) => sorted[i] === key);
}
