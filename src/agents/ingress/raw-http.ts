// AGT-3: the HTTP/1.1 the ingress's fast path reads itself (fast-path.ts). It
// accepts a narrow, unambiguous subset of request heads: anything outside it
// (another version, Transfer-Encoding, Expect, Upgrade, obs-fold, a byte that
// is not plain visible ASCII, a second Host or Content-Length…) is left to
// Node's own parser, which answers it as it always did. Responses come from
// an instance, which may try to end its response somewhere else than the
// client will (to pass off bytes as the answer to the next request): their
// framing is read strictly, and what does not fit is a broken response. Heads
// are read byte by byte against tables of the bytes each part may hold (the
// grammar the tests state again as regular expressions, raw-http.test.ts),
// and a head must end within MAX_HEAD_BYTES however it arrives.

/** The longest head either side may send (Node's default maxHeaderSize): past it, Node's parser (431) or a 502. */
export const MAX_HEAD_BYTES = 16 * 1024;

/**
 * The start of `buffer` as latin1 text (one character per byte received), as far as a head may
 * reach: a head that has not ended within it is too long.
 */
export function headText(buffer: Buffer): string {
  return buffer.toString('latin1', 0, Math.min(buffer.length, MAX_HEAD_BYTES));
}

/** Where the head in `text` (see headText) ends, past its blank line, or -1 if it has not ended there. */
export function headEnd(text: string): number {
  const at = text.indexOf('\r\n\r\n');
  return at === -1 ? -1 : at + 4;
}

/**
 * A head as read, for passing on: its text, and where each header's line is in it, so that a
 * header passed on unchanged goes as the bytes it arrived as (headers.ts).
 */
export interface HeadLines {
  /** The text the head was read from (headText): its lines are separated by CRLF. */
  readonly text: string;
  /** Header pairs as sent (names as spelled, values without the whitespace around them). */
  readonly raw: readonly string[];
  /** Each header's name in lowercase. */
  readonly lower: readonly string[];
  /** Each header's line in `text`: its start and its end (before its CRLF), two numbers per header. */
  readonly spans: readonly number[];
}

export interface RequestHead extends HeadLines {
  readonly method: string;
  /** Origin form (starts with '/'). */
  readonly target: string;
  readonly host: string;
  readonly contentLength: number;
  /** X-Forwarded-For as Node joins it (lines joined by ', '), for judging the client's address. */
  readonly forwardedFor: string | undefined;
  /** Whether the client asked to close the connection after this exchange. */
  readonly close: boolean;
}

const DIGITS = /^[0-9]{1,15}$/;
/** Headers whose presence sends the request to Node's parser: framing or semantics the fast path does not take on. */
const LEFT_TO_NODE = new Set(['transfer-encoding', 'expect', 'upgrade']);

/** A table indexed by byte: 1 for the bytes in `ranges` (each from–to, inclusive), else 0. */
function byteTable(...ranges: readonly (readonly [number, number])[]): Uint8Array {
  const table = new Uint8Array(256);
  for (const [from, to] of ranges) table.fill(1, from, to + 1);
  return table;
}
const HTAB = 0x09;
const SP = 0x20;
const COLON = 0x3a;
const SLASH = 0x2f;
/** What ends a request line. */
const VERSION = ' HTTP/1.1';
const isUpper = (byte: number): boolean => byte >= 0x41 && byte <= 0x5a;
const isDigit = (byte: number): boolean => byte >= 0x30 && byte <= 0x39;
/** Visible ASCII, no space. */
const isVisible = (byte: number): boolean => byte >= 0x21 && byte <= 0x7e;
/** A field name is a token: ! # $ % & ' * + - . ^ _ ` | ~ digits and letters. */
const TOKEN = byteTable(
  ...[..."!#$%&'*+-.^_`|~"].map((c) => [c.charCodeAt(0), c.charCodeAt(0)] as const),
  [0x30, 0x39],
  [0x41, 0x5a],
  [0x61, 0x7a],
);
// The client controls every byte: request values are visible ASCII, space or tab (no CR, LF, NUL, obs-text).
const REQUEST_VALUE = byteTable([HTAB, HTAB], [SP, 0x7e]);
// The instance controls every byte: values may carry obs-text (as Node's parser allows), never CR, LF or NUL.
const RESPONSE_VALUE = byteTable([HTAB, HTAB], [SP, 0x7e], [0x80, 0xff]);

/** Where readField found the last field line's name end and value (the parsers run one at a time). */
let nameEnd = 0;
let valueStart = 0;
let valueEnd = 0;

/**
 * Whether `text[from, to)` is one field line, `token ":" OWS value OWS`, with every value byte in
 * `allowed`; if so its name is `text[from, nameEnd)` and its value, without the whitespace around
 * it, `text[valueStart, valueEnd)`.
 */
function readField(text: string, from: number, to: number, allowed: Uint8Array): boolean {
  let i = from;
  while (i < to && TOKEN[text.charCodeAt(i)] === 1) i++;
  if (i === from || i === to || text.charCodeAt(i) !== COLON) return false;
  nameEnd = i;
  i++;
  while (i < to && (text.charCodeAt(i) === SP || text.charCodeAt(i) === HTAB)) i++;
  valueStart = i;
  valueEnd = i;
  for (; i < to; i++) {
    const byte = text.charCodeAt(i);
    if (allowed[byte] !== 1) return false;
    if (byte !== SP && byte !== HTAB) valueEnd = i + 1;
  }
  return true;
}

/** Where the line of a head's `text` starting at `from` ends: its CRLF (the head's blank line ends the last). */
function lineEnd(text: string, from: number): number {
  return text.indexOf('\r\n', from);
}

/**
 * The request head in `text[0, end)` (headText, headEnd) if it is within the fast path's subset,
 * else undefined (the whole connection then goes to Node's parser, bytes untouched).
 */
export function parseRequestHead(text: string, end: number): RequestHead | undefined {
  // Lines are separated by CRLF (a bare CR or LF is a bad byte); the last ends where the blank line starts.
  const last = end - 4;
  let to = lineEnd(text, 0);
  // The request line: `[A-Z]{1,20} SP /[\x21-\x7e]* SP HTTP/1.1`.
  let at = 0;
  while (at < to && isUpper(text.charCodeAt(at))) at++;
  if (at === 0 || at > 20 || text.charCodeAt(at) !== SP || text.charCodeAt(at + 1) !== SLASH)
    return undefined;
  const method = text.slice(0, at);
  // CONNECT asks for a tunnel, which only Node's path refuses as it should.
  if (method === 'CONNECT') return undefined;
  const targetStart = at + 1;
  at = targetStart + 1;
  while (at < to && isVisible(text.charCodeAt(at))) at++;
  if (to - at !== VERSION.length || !text.startsWith(VERSION, at)) return undefined;
  const target = text.slice(targetStart, at);
  const raw: string[] = [];
  const lowers: string[] = [];
  const spans: number[] = [];
  const fields = new RequestFields();
  for (let from = to + 2; from <= last; from = to + 2) {
    to = lineEnd(text, from);
    if (!readField(text, from, to, REQUEST_VALUE)) return undefined;
    const name = text.slice(from, nameEnd);
    const value = text.slice(valueStart, valueEnd);
    const lower = name.toLowerCase();
    if (!fields.take(lower, value)) return undefined;
    raw.push(name, value);
    lowers.push(lower);
    spans.push(from, to);
  }
  if (fields.host === undefined) return undefined;
  return {
    text,
    raw,
    lower: lowers,
    spans,
    method,
    target,
    host: fields.host,
    contentLength: fields.contentLength ?? 0,
    forwardedFor: fields.forwardedFor,
    close: fields.close,
  };
}

/**
 * What a request head's fields say, taken one by one in order (whichever way its lines were
 * read): its Host, length and X-Forwarded-For, and whether it asks to close the connection.
 */
export class RequestFields {
  host: string | undefined = undefined;
  contentLength: number | undefined = undefined;
  /** As Node joins the lines: with ', '. */
  forwardedFor: string | undefined = undefined;
  close = false;

  /** Takes a field (`lower`: its name in lowercase); false when it puts the head outside the subset. */
  take(lower: string, value: string): boolean {
    if (LEFT_TO_NODE.has(lower)) return false;
    if (lower === 'host') {
      if (this.host !== undefined) return false;
      this.host = value;
    } else if (lower === 'content-length') {
      if (this.contentLength !== undefined || !DIGITS.test(value)) return false;
      this.contentLength = Number(value);
    } else if (lower === 'x-forwarded-for') {
      this.forwardedFor = this.forwardedFor === undefined ? value : `${this.forwardedFor}, ${value}`;
    } else if (lower === 'connection') {
      const options = value.toLowerCase();
      // Nearly always one option: no list to split.
      if (options === 'close') this.close = true;
      else if (options !== 'keep-alive') {
        for (const token of options.split(',')) {
          const option = token.trim();
          if (option === 'close') this.close = true;
          else if (option !== 'keep-alive') return false;
        }
      }
    }
    return true;
  }
}

/** How a response's body ends (RFC 9112 §6.3). */
export type Framing =
  | { readonly kind: 'length'; readonly length: number }
  | { readonly kind: 'chunked' }
  | { readonly kind: 'close' };

export interface ResponseHead extends HeadLines {
  readonly status: number;
  readonly framing: Framing;
  /**
   * How long the instance keeps its end of the connection open for another request after this
   * one: 0 when it closes it (HTTP/1.0, `Connection: close`), undefined when it does not say.
   */
  readonly keepsOpenMs: number | undefined;
}

const KEEP_ALIVE_TIMEOUT = /(?:^|[ ,])timeout=([0-9]{1,6})(?:$|[ ,])/;

/**
 * The status a status line `text[0, to)` gives, or -1 when it is not `HTTP/1.0` or `HTTP/1.1`,
 * a space and a status from 100 to 599, then nothing or a space and a reason of value bytes.
 */
function statusOf(text: string, to: number): number {
  const minor = text.charCodeAt(7);
  if (
    to < 12 ||
    !text.startsWith('HTTP/1.') ||
    (minor !== 0x30 && minor !== 0x31) ||
    text.charCodeAt(8) !== SP
  ) {
    return -1;
  }
  const hundreds = text.charCodeAt(9);
  const tens = text.charCodeAt(10);
  const units = text.charCodeAt(11);
  if (hundreds < 0x31 || hundreds > 0x35 || !isDigit(tens) || !isDigit(units)) return -1;
  if (to > 12 && text.charCodeAt(12) !== SP) return -1;
  for (let i = 13; i < to; i++) if (RESPONSE_VALUE[text.charCodeAt(i)] !== 1) return -1;
  return (hundreds - 0x30) * 100 + (tens - 0x30) * 10 + (units - 0x30);
}

/**
 * The response head in `text[0, end)` (headText, headEnd), or undefined when it is malformed or
 * its framing is ambiguous (both Content-Length and Transfer-Encoding, two lengths, a coding other
 * than chunked).
 */
export function parseResponseHead(text: string, end: number, method: string): ResponseHead | undefined {
  const last = end - 4;
  let to = lineEnd(text, 0);
  const status = statusOf(text, to);
  if (status === -1) return undefined;
  const raw: string[] = [];
  const lowers: string[] = [];
  const spans: number[] = [];
  const fields = new ResponseFields(text.charCodeAt(7) === 0x30);
  for (let from = to + 2; from <= last; from = to + 2) {
    to = lineEnd(text, from);
    if (!readField(text, from, to, RESPONSE_VALUE)) return undefined;
    const name = text.slice(from, nameEnd);
    const value = text.slice(valueStart, valueEnd);
    const lower = name.toLowerCase();
    if (!fields.take(lower, value)) return undefined;
    raw.push(name, value);
    lowers.push(lower);
    spans.push(from, to);
  }
  const framing = fields.framing(method, status);
  if (framing === undefined) return undefined;
  return { text, raw, lower: lowers, spans, status, framing, keepsOpenMs: fields.keepsOpenMs };
}

/**
 * What a response head's fields say, taken one by one in order (whichever way its lines were
 * read): how its body ends, and how long the instance keeps the connection open.
 */
export class ResponseFields {
  length: string | undefined = undefined;
  coding: string | undefined = undefined;
  keepsOpenMs: number | undefined;

  /** `http10`: the status line says HTTP/1.0, which closes the connection after the response unless it says otherwise. */
  constructor(http10: boolean) {
    this.keepsOpenMs = http10 ? 0 : undefined;
  }

  /** Takes a field (`lower`: its name in lowercase); false when its framing is malformed. */
  take(lower: string, value: string): boolean {
    if (lower === 'content-length') {
      if ((this.length !== undefined && this.length !== value) || !DIGITS.test(value)) return false;
      this.length = value;
    } else if (lower === 'transfer-encoding') {
      if (this.coding !== undefined) return false;
      this.coding = value.toLowerCase();
    } else if (lower === 'connection') {
      if (value.toLowerCase().includes('close')) this.keepsOpenMs = 0;
    } else if (lower === 'keep-alive' && this.keepsOpenMs !== 0) {
      const timeout = KEEP_ALIVE_TIMEOUT.exec(value);
      if (timeout !== null) this.keepsOpenMs = Number(timeout[1]) * 1000;
    }
    return true;
  }

  /**
   * How the body of a response with `status` to `method` ends, or undefined when its framing is
   * ambiguous (both Content-Length and Transfer-Encoding, a coding other than chunked).
   */
  framing(method: string, status: number): Framing | undefined {
    const { length, coding } = this;
    if (coding !== undefined && (coding !== 'chunked' || length !== undefined)) return undefined;
    if (method === 'HEAD' || status < 200 || status === 204 || status === 304)
      return { kind: 'length', length: 0 };
    if (coding !== undefined) return { kind: 'chunked' };
    return length !== undefined ? { kind: 'length', length: Number(length) } : { kind: 'close' };
  }
}

/** What a body reader made of a chunk: how many of its bytes belong to the body, and whether the body ended. */
export interface BodyStep {
  readonly used: number;
  readonly ended: boolean;
}

/** Reads a body's framing, chunk by chunk; throws BrokenFraming where the bytes leave the strict form. */
export interface BodyReader {
  step(chunk: Buffer, from: number): BodyStep;
}

export class BrokenFraming extends Error {}

export function bodyReader(framing: Framing): BodyReader {
  if (framing.kind === 'close')
    return { step: (chunk, from) => ({ used: chunk.length - from, ended: false }) };
  if (framing.kind === 'length') {
    let left = framing.length;
    return {
      step(chunk, from) {
        const used = Math.min(left, chunk.length - from);
        left -= used;
        return { used, ended: left === 0 };
      },
    };
  }
  return chunkedReader();
}

/** The longest chunk-size line and trailer section accepted: 8 hex digits is 4 GiB per chunk. */
const MAX_SIZE_DIGITS = 8;

/**
 * Chunked framing in its plain form only: `hex CRLF data CRLF` … `0 CRLF` then trailer fields and
 * a blank line. No chunk extensions, no whitespace: a form two parsers could read differently is refused.
 */
function chunkedReader(): BodyReader {
  let state: 'size' | 'sizeLF' | 'data' | 'dataCR' | 'dataLF' | 'trailer' | 'trailerLF' = 'size';
  let digits = 0;
  let size = 0;
  let left = 0;
  let trailerLine = 0;
  let trailerBytes = 0;
  return {
    step(chunk, from) {
      let i = from;
      while (i < chunk.length) {
        if (state === 'data') {
          const take = Math.min(left, chunk.length - i);
          i += take;
          left -= take;
          if (left === 0) state = 'dataCR';
          continue;
        }
        const byte = chunk[i] ?? 0;
        i++;
        switch (state) {
          case 'size': {
            const value = hexValue(byte);
            if (value !== -1 && digits < MAX_SIZE_DIGITS) {
              size = size * 16 + value;
              digits++;
            } else if (byte === 0x0d && digits > 0) state = 'sizeLF';
            else throw new BrokenFraming('chunk size');
            break;
          }
          case 'sizeLF':
            if (byte !== 0x0a) throw new BrokenFraming('chunk size line');
            if (size === 0) state = 'trailer';
            else {
              left = size;
              state = 'data';
            }
            digits = 0;
            size = 0;
            break;
          case 'dataCR':
            if (byte !== 0x0d) throw new BrokenFraming('chunk end');
            state = 'dataLF';
            break;
          case 'dataLF':
            if (byte !== 0x0a) throw new BrokenFraming('chunk end');
            state = 'size';
            break;
          case 'trailer':
            // Trailer fields: kept as bytes (Node's instances rarely send them); only their line shape is checked.
            trailerBytes++;
            if (trailerBytes > MAX_HEAD_BYTES) throw new BrokenFraming('trailers too long');
            if (byte === 0x0d) state = 'trailerLF';
            else if (byte === 0x0a || byte === 0x00) throw new BrokenFraming('trailer byte');
            else trailerLine++;
            break;
          case 'trailerLF':
            if (byte !== 0x0a) throw new BrokenFraming('trailer line');
            if (trailerLine === 0) return { used: i - from, ended: true };
            trailerLine = 0;
            state = 'trailer';
            break;
        }
      }
      return { used: i - from, ended: false };
    },
  };
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  if (byte >= 0x61 && byte <= 0x66) return byte - 0x57;
  if (byte >= 0x41 && byte <= 0x46) return byte - 0x37;
  return -1;
}
