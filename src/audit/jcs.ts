import canonicalize from 'canonicalize';
import { isCanonicalJsonText, MAX_JSON_DEPTH, parseCanonicalJsonText } from './canonical-text.ts';
import { AuditError } from './errors.ts';

export { isCanonicalJsonText, MAX_JSON_DEPTH };

// RFC 8785 JSON Canonicalization Scheme. `canonicalize` does the encoding;
// this module decides what may be encoded. JSON.stringify-style leniency
// (silently turning a Date into a string, NaN into null, dropping a function)
// would make the hashed bytes say something other than what the caller
// meant, so anything JCS cannot represent exactly is refused instead.

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

/**
 * The RFC 8785 canonical text of a JSON value. Refuses (AuditError
 * `jcs_unrepresentable`) non-finite numbers, BigInt, symbols, functions,
 * undefined (at the top level and as an array element; an object member
 * whose value is undefined is omitted, as in JSON), sparse arrays, strings
 * with lone surrogates, circular structures, objects nested deeper than
 * MAX_JSON_DEPTH, and every object that is not a plain object or an array
 * (Date, Map, Buffer, class instances, boxed primitives).
 */
export function canonicalJson(value: unknown): string {
  assertRepresentable(value, '$', 0, new Set());
  const text = canonicalize(value);
  if (text === undefined) throw unrepresentable('$', 'has no JSON form');
  return text;
}

/**
 * Parses JSON text that must already be canonical: `canonicalJson(parse(text)) === text`.
 * Throws AuditError `jcs_not_canonical` for text that parses but is not canonical,
 * and for text that does not parse.
 */
export function parseCanonicalJson(text: string): JsonValue {
  const value = parseCanonicalJsonText(text);
  if (value === undefined) throw new AuditError('jcs_not_canonical', 'text is not JSON in JCS form');
  return value;
}

function assertRepresentable(value: unknown, path: string, depth: number, ancestors: Set<object>): void {
  switch (typeof value) {
    case 'string':
      if (!value.isWellFormed()) throw unrepresentable(path, 'is a string with a lone surrogate');
      return;
    case 'number':
      if (!Number.isFinite(value)) throw unrepresentable(path, `is ${value}, which JSON cannot represent`);
      return;
    case 'boolean':
      return;
    case 'object':
      if (value === null) return;
      assertContainer(value, path, depth, ancestors);
      return;
    default:
      throw unrepresentable(path, `is ${typeof value === 'undefined' ? 'undefined' : `a ${typeof value}`}`);
  }
}

function assertContainer(value: object, path: string, depth: number, ancestors: Set<object>): void {
  if (depth >= MAX_JSON_DEPTH) throw unrepresentable(path, `is nested deeper than ${MAX_JSON_DEPTH} levels`);
  if (ancestors.has(value)) throw unrepresentable(path, 'is a circular reference');
  ancestors.add(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (!(i in value)) throw unrepresentable(`${path}[${i}]`, 'is a hole in a sparse array');
      assertRepresentable(value[i], `${path}[${i}]`, depth + 1, ancestors);
    }
  } else {
    const prototype = Object.getPrototypeOf(value);
    if (prototype !== Object.prototype && prototype !== null) {
      throw unrepresentable(
        path,
        `is a ${value.constructor?.name ?? 'non-plain object'}, not a plain object`,
      );
    }
    for (const [key, member] of Object.entries(value)) {
      if (!key.isWellFormed()) throw unrepresentable(path, 'has a key with a lone surrogate');
      // JSON omits members whose value is undefined; JCS does the same.
      if (member !== undefined) assertRepresentable(member, `${path}.${key}`, depth + 1, ancestors);
    }
  }
  ancestors.delete(value);
}

function unrepresentable(path: string, why: string): AuditError<'jcs_unrepresentable'> {
  return new AuditError('jcs_unrepresentable', `JCS cannot represent the value: ${path} ${why}`);
}
