import type { JsonObject, JsonValue } from './jcs.ts';

// Deciding whether JSON text is already in RFC 8785 canonical form, in one
// pass over the text and without building the value. It accepts `text`
// exactly when `canonicalJson(parse(text)) === text` for a correct JSON parse
// (canonical-text.test.ts checks that on the vectors and on a seeded
// differential fuzz run); it exists because the offline verifier checks a
// million events and JSON.parse + re-serialization costs twice the SHA-256
// it guards.
//
// Canonical text, concretely: no whitespace between tokens; object keys in
// strictly ascending UTF-16 code-unit order (so no duplicates); numbers as
// ECMAScript Number::toString prints them; strings with only \" \\ \b \f \n
// \r \t and lowercase \u00XX (for the other control characters) as escapes,
// every other character raw, no lone surrogates; nesting below MAX_JSON_DEPTH.

/** Deeper nesting is refused, so a hostile document cannot exhaust the stack of a verifier. */
export const MAX_JSON_DEPTH = 100;

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it matches
const CONTROL = /[\u0000-\u001f]/;
const [QUOTE, BACKSLASH, COMMA, COLON] = [0x22, 0x5c, 0x2c, 0x3a];
const [OPEN_OBJECT, CLOSE_OBJECT, OPEN_ARRAY, CLOSE_ARRAY] = [0x7b, 0x7d, 0x5b, 0x5d];
/** The characters after a backslash that need nothing more: \" \\ \b \f \n \r \t */
const SHORT_ESCAPES: readonly number[] = [0x22, 0x5c, 0x62, 0x66, 0x6e, 0x72, 0x74];

/** Whether text[from, to) holds a raw control character (U+0000–U+001F), which canonical text never does. */
export function hasRawControl(text: string, from = 0, to = text.length): boolean {
  return CONTROL.test(from === 0 && to === text.length ? text : text.slice(from, to));
}

/** Whether `text` is exactly the JCS form of the JSON value it denotes. */
export function isCanonicalJsonText(text: string): boolean {
  return CanonicalScanner.for(text)?.skipValue(0, 0) === text.length;
}

/** The value of canonical JSON text, or undefined when the text is not canonical. */
export function parseCanonicalJsonText(text: string): JsonValue | undefined {
  const scanner = CanonicalScanner.for(text);
  if (scanner?.skipValue(0, 0) !== text.length) return undefined;
  // JSON.parse can return the wrong name for an escaped object key once an earlier parse
  // left a matching map transition (V8 bug, nodejs/node#63785, Node 24 and 26), and an
  // attacker can write that earlier text. Texts with escaped keys are built here instead.
  return scanner.sawEscapedKey ? buildValue(text, 0).value : (JSON.parse(text) as JsonValue);
}

/**
 * A cursor over one text. Each skip* method takes the index where a token
 * starts and returns the index just past it, or -1 when the token is not
 * canonical. Used by isCanonicalJsonText and by the audit event reader.
 */
export class CanonicalScanner {
  readonly text: string;
  /** Whether the last string skipped had an escape (its value then differs from its raw characters). */
  lastStringEscaped = false;
  /** Whether any object key skipped so far had an escape. */
  sawEscapedKey = false;
  #nextBackslash: number;

  /** A scanner, or undefined when the text cannot be canonical anywhere (a raw control character or lone surrogate). */
  static for(text: string): CanonicalScanner | undefined {
    // Raw control characters are never canonical: inside strings they are escaped, outside they are whitespace.
    if (hasRawControl(text)) return undefined;
    return CanonicalScanner.leavingControls(text);
  }

  /**
   * A scanner that does not search strings without escapes for raw control
   * characters: the caller rules them out itself wherever they would be
   * accepted (see hasRawControl). Outside strings and in strings with an
   * escape, skip* refuses them as always. For the event reader, whose strings
   * all have a stricter rule of their own but in `data`.
   */
  static leavingControls(text: string): CanonicalScanner | undefined {
    return text.isWellFormed() ? new CanonicalScanner(text) : undefined;
  }

  private constructor(text: string) {
    this.text = text;
    this.#nextBackslash = text.indexOf('\\');
  }

  skipValue(at: number, depth: number): number {
    const c = this.text.charCodeAt(at);
    if (c === QUOTE) return this.skipString(at);
    if (c === OPEN_OBJECT) return depth >= MAX_JSON_DEPTH ? -1 : this.#skipObject(at, depth);
    if (c === OPEN_ARRAY) return depth >= MAX_JSON_DEPTH ? -1 : this.#skipArray(at, depth);
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.skipNumber(at);
    if (c === 0x74) return this.text.startsWith('true', at) ? at + 4 : -1;
    if (c === 0x66) return this.text.startsWith('false', at) ? at + 5 : -1;
    if (c === 0x6e) return this.text.startsWith('null', at) ? at + 4 : -1;
    return -1;
  }

  skipString(at: number): number {
    if (this.text.charCodeAt(at) !== QUOTE) return -1;
    const close = this.text.indexOf('"', at + 1);
    if (close < 0) return -1;
    if (this.#nextBackslash < 0 || this.#nextBackslash > close) {
      this.lastStringEscaped = false;
      return close + 1;
    }
    const end = this.#skipEscapedString(at);
    this.#nextBackslash = end < 0 ? -1 : this.text.indexOf('\\', end);
    this.lastStringEscaped = true;
    return end;
  }

  skipNumber(at: number): number {
    const text = this.text;
    let end = at;
    // Fast path: a positive integer of at most 15 digits without a leading zero is exact and prints as itself.
    while (end - at < 15 && isDigit(text.charCodeAt(end)) && text.charCodeAt(at) !== 0x30) end++;
    if (end > at && !isNumberCharacter(text.charCodeAt(end))) return end;
    end = at;
    while (isNumberCharacter(text.charCodeAt(end))) end++;
    const token = text.slice(at, end);
    // Number::toString output is valid JSON, and the only canonical spelling of its value.
    return end > at && String(Number(token)) === token ? end : -1;
  }

  #skipObject(at: number, depth: number): number {
    const text = this.text;
    if (text.charCodeAt(at + 1) === CLOSE_OBJECT) return at + 2;
    let index = at + 1;
    let previousStart = -1;
    let previousEnd = -1;
    let previousEscaped = false;
    for (;;) {
      const keyEnd = this.skipString(index);
      if (keyEnd < 0 || text.charCodeAt(keyEnd) !== COLON) return -1;
      const escaped = this.lastStringEscaped;
      if (escaped) this.sawEscapedKey = true;
      if (
        previousStart >= 0 &&
        !this.#keyAscends(previousStart, previousEnd, previousEscaped, index, keyEnd, escaped)
      ) {
        return -1;
      }
      previousStart = index;
      previousEnd = keyEnd;
      previousEscaped = escaped;
      index = this.skipValue(keyEnd + 1, depth + 1);
      if (index < 0) return -1;
      const next = text.charCodeAt(index);
      if (next === CLOSE_OBJECT) return index + 1;
      if (next !== COMMA) return -1;
      index++;
    }
  }

  #skipArray(at: number, depth: number): number {
    if (this.text.charCodeAt(at + 1) === CLOSE_ARRAY) return at + 2;
    let index = at + 1;
    for (;;) {
      index = this.skipValue(index, depth + 1);
      if (index < 0) return -1;
      const next = this.text.charCodeAt(index);
      if (next === CLOSE_ARRAY) return index + 1;
      if (next !== COMMA) return -1;
      index++;
    }
  }

  /** A string with at least one escape, character by character (so its value never has a raw control character to decode). */
  #skipEscapedString(at: number): number {
    const text = this.text;
    for (let i = at + 1; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === QUOTE) return i + 1;
      if (c < 0x20) return -1;
      if (c !== BACKSLASH) continue;
      const escaped = text.charCodeAt(++i);
      if (SHORT_ESCAPES.includes(escaped)) continue;
      // \u00XX with lowercase hex, only for control characters without a short escape.
      if (escaped !== 0x75 || !text.startsWith('00', i + 1)) return -1;
      const code = controlCode(text.charCodeAt(i + 3), text.charCodeAt(i + 4));
      if (code < 0 || code === 0x08 || code === 0x09 || code === 0x0a || code === 0x0c || code === 0x0d)
        return -1;
      i += 4;
    }
    return -1;
  }

  /** Whether key a (raw text [aStart, aEnd) with its quotes) sorts strictly before key b by UTF-16 code units. */
  #keyAscends(
    aStart: number,
    aEnd: number,
    aEscaped: boolean,
    bStart: number,
    bEnd: number,
    bEscaped: boolean,
  ) {
    const text = this.text;
    if (aEscaped || bEscaped)
      return this.#keyValue(aStart, aEnd, aEscaped) < this.#keyValue(bStart, bEnd, bEscaped);
    const aLength = aEnd - aStart - 2;
    const bLength = bEnd - bStart - 2;
    const shorter = Math.min(aLength, bLength);
    for (let i = 1; i <= shorter; i++) {
      const x = text.charCodeAt(aStart + i);
      const y = text.charCodeAt(bStart + i);
      if (x !== y) return x < y;
    }
    return aLength < bLength;
  }

  /** The value of the key [start, end) (with its quotes); only one with an escape needs decoding. */
  #keyValue(start: number, end: number, escaped: boolean): string {
    return escaped
      ? (JSON.parse(this.text.slice(start, end)) as string)
      : this.text.slice(start + 1, end - 1);
  }
}

/** Builds the value of text already known to be canonical (so no checks), from `at`. */
function buildValue(text: string, at: number): { value: JsonValue; end: number } {
  const c = text.charCodeAt(at);
  if (c === QUOTE) {
    const end = stringEnd(text, at);
    // A lone string literal is decoded correctly; only object keys hit the V8 bug.
    return { value: JSON.parse(text.slice(at, end)) as string, end };
  }
  if (c === OPEN_ARRAY || c === OPEN_OBJECT) {
    const close = c === OPEN_ARRAY ? CLOSE_ARRAY : CLOSE_OBJECT;
    const items: JsonValue[] = [];
    const entries: [string, JsonValue][] = [];
    let index = at + 1;
    while (text.charCodeAt(index) !== close) {
      if (c === OPEN_ARRAY) {
        const item = buildValue(text, index);
        items.push(item.value);
        index = item.end;
      } else {
        const keyEnd = stringEnd(text, index);
        const member = buildValue(text, keyEnd + 1);
        entries.push([JSON.parse(text.slice(index, keyEnd)) as string, member.value]);
        index = member.end;
      }
      if (text.charCodeAt(index) === COMMA) index++;
    }
    // Object.fromEntries defines own data properties, so "__proto__" stays a key, as in JSON.parse.
    return { value: c === OPEN_ARRAY ? items : (Object.fromEntries(entries) as JsonObject), end: index + 1 };
  }
  if (c === 0x74) return { value: true, end: at + 4 };
  if (c === 0x66) return { value: false, end: at + 5 };
  if (c === 0x6e) return { value: null, end: at + 4 };
  let end = at;
  while (isNumberCharacter(text.charCodeAt(end))) end++;
  return { value: Number(text.slice(at, end)), end };
}

/** The index past the closing quote of the string literal at `at`. */
function stringEnd(text: string, at: number): number {
  let i = at + 1;
  for (let c = text.charCodeAt(i); c !== QUOTE; c = text.charCodeAt(i)) i += c === BACKSLASH ? 2 : 1;
  return i + 1;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isNumberCharacter(c: number): boolean {
  // 0-9 - + . e E
  return (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e || c === 0x65 || c === 0x45;
}

/** The value of the hex pair [01][0-9a-f] (lowercase only), or -1. */
function controlCode(high: number, low: number): number {
  if (high !== 0x30 && high !== 0x31) return -1;
  const lowValue = low >= 0x30 && low <= 0x39 ? low - 0x30 : low >= 0x61 && low <= 0x66 ? low - 0x57 : -1;
  return lowValue < 0 ? -1 : (high - 0x30) * 16 + lowValue;
}
