import type { AuditEventFields, AuditEventHeader } from './event.ts';

// The rules each field of an audit event obeys, shared by the writer
// (canonicalEvent) and the readers (parseCanonicalEvent, the chain verifier),
// so an event that reads back is one the writer could have produced.

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const ACTOR = /^[!-~]{1,256}$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it matches
const CONTROL = /[\u0000-\u001f\u007f]/;
const ACTION = /^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+$/;
const MAX_ACTION_LENGTH = 128;
const MAX_TARGET_LENGTH = 512;

/** What is wrong with the fields, or undefined. Values may come from anywhere: types are checked too. */
export function eventFieldsProblem(fields: AuditEventFields): string | undefined {
  const { data } = fields;
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return 'data must be a JSON object';
  return eventHeaderProblem(fields);
}

/**
 * Field values already found valid: the chain's tenant id, and the actor and
 * action of the event before (a chain repeats them), which then need no regex.
 */
export interface KnownFields {
  readonly tenant?: string | undefined;
  readonly actor?: string | undefined;
  readonly action?: string | undefined;
}

/** eventFieldsProblem without `data`; a field equal to its value in `known` is not checked again. */
export function eventHeaderProblem(header: AuditEventHeader, known?: KnownFields): string | undefined {
  const { tenant, seq, ts, actor, action, target } = header;
  if (tenant !== known?.tenant && (typeof tenant !== 'string' || !UUID.test(tenant))) {
    return 'tenant must be a lowercase UUID';
  }
  if (!Number.isSafeInteger(seq) || seq < 1) return 'seq must be a positive safe integer';
  if (typeof ts !== 'string' || !isEventTime(ts)) return 'ts must be RFC 3339 UTC with milliseconds';
  if (actor !== known?.actor && (typeof actor !== 'string' || !ACTOR.test(actor)))
    return 'actor must be 1–256 printable ASCII characters';
  if (
    action !== known?.action &&
    (typeof action !== 'string' || action.length > MAX_ACTION_LENGTH || !ACTION.test(action))
  ) {
    return 'action must be lowercase dotted words, at most 128 characters';
  }
  if (target !== null && !isTarget(target)) return 'target must be null or 1–512 characters, no controls';
  return undefined;
}

/** Whether `tenant` is a tenant id as events carry it: a lowercase UUID. */
export function isTenantId(tenant: string): boolean {
  return UUID.test(tenant);
}

function isEventTime(ts: string): boolean {
  if (!TIMESTAMP.test(ts)) return false;
  // Field ranges by arithmetic rather than Date.parse, which costs more than the
  // SHA-256 of the event and rolls impossible dates over (2026-02-30 → 03-02).
  const year = digits(ts, 0, 4);
  const month = digits(ts, 5, 7);
  const day = digits(ts, 8, 10);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const monthDays =
    month === 2 ? (leap ? 29 : 28) : month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
  return (
    month >= 1 &&
    month <= 12 &&
    day >= 1 &&
    day <= monthDays &&
    digits(ts, 11, 13) <= 23 &&
    digits(ts, 14, 16) <= 59 &&
    digits(ts, 17, 19) <= 59
  );
}

/** The decimal value of the ASCII digits text[from … to). */
function digits(text: string, from: number, to: number): number {
  let value = 0;
  for (let i = from; i < to; i++) value = value * 10 + text.charCodeAt(i) - 48;
  return value;
}

function isTarget(target: unknown): boolean {
  return (
    typeof target === 'string' &&
    target.length > 0 &&
    codePointsAtMost(target, MAX_TARGET_LENGTH) &&
    !CONTROL.test(target)
  );
}

/**
 * Whether text has at most `max` code points: lengths in the format count
 * code points (docs/audit-format.md §1), as the database's check does, not
 * UTF-16 units.
 */
function codePointsAtMost(text: string, max: number): boolean {
  if (text.length <= max) return true;
  if (text.length > 2 * max) return false;
  let count = 0;
  for (const _ of text) if (++count > max) return false;
  return true;
}
