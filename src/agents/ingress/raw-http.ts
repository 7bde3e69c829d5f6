// AGT-3: the HTTP/1.1 the ingress's fast path reads itself (fast-path.ts). It
// accepts a narrow, unambiguous subset of request heads: anything outside it
// (another version, Transfer-Encoding, Expect, Upgrade, obs-fold, a byte that
// is not plain visible ASCII, a second Host or Content-Length…) is left to
// Node's own parser, which answers it as it always did. Responses come from
// an instance, which may try to end its response somewhere else than the
// client will (to pass off bytes as the answer to the next request): their
// framing is read strictly, and what does not fit is a broken response.

/** The longest head either side may send (Node's default maxHeaderSize): past it, Node's parser (431) or a 502. */
export const MAX_HEAD_BYTES = 16 * 1024;

const CRLF2 = Buffer.from('\r\n\r\n');

/** Where the head in `buffer` ends (past its blank line), or -1 if it has not ended yet. */
export function headEnd(buffer: Buffer): number {
  const at = buffer.indexOf(CRLF2);
  return at === -1 ? -1 : at + 4;
}

export interface RequestHead {
  readonly method: string;
  /** Origin form (starts with '/'). */
  readonly target: string;
  /** Header pairs as sent (names as spelled, values trimmed). */
  readonly raw: readonly string[];
  readonly host: string;
  readonly contentLength: number;
  /** X-Forwarded-For as Node joins it (lines joined by ', '), for judging the client's address. */
  readonly forwardedFor: string | undefined;
  /** Whether the client asked to close the connection after this exchange. */
  readonly close: boolean;
}

const REQUEST_LINE = /^([A-Z]{1,20}) (\/[\x21-\x7e]*) HTTP\/1\.1$/;
// The client controls every byte: names are tokens, values visible ASCII, space or tab (no CR, LF, NUL, obs-text).
const REQUEST_FIELD = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t]*?)[ \t]*$/;
const DIGITS = /^[0-9]{1,15}$/;
/** Headers whose presence sends the request to Node's parser: framing or semantics the fast path does not take on. */
const LEFT_TO_NODE = new Set(['transfer-encoding', 'expect', 'upgrade']);

/**
 * The request head in `buffer[0, end)` if it is within the fast path's subset, else undefined
 * (the whole connection then goes to Node's parser, bytes untouched).
 */
export function parseRequestHead(buffer: Buffer, end: number): RequestHead | undefined {
  const lines = buffer.toString('latin1', 0, end - 4).split('\r\n');
  const start = REQUEST_LINE.exec(lines[0] ?? '');
  // CONNECT asks for a tunnel, which only Node's path refuses as it should.
  if (start === null || start[1] === 'CONNECT') return undefined;
  const raw: string[] = [];
  let host: string | undefined;
  let contentLength: number | undefined;
  let close = false;
  let forwardedFor: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const field = REQUEST_FIELD.exec(lines[i] ?? '');
    if (field === null) return undefined;
    const name = field[1] ?? '';
    const value = field[2] ?? '';
    const lower = name.toLowerCase();
    if (LEFT_TO_NODE.has(lower)) return undefined;
    if (lower === 'host') {
      if (host !== undefined) return undefined;
      host = value;
    } else if (lower === 'content-length') {
      if (contentLength !== undefined || !DIGITS.test(value)) return undefined;
      contentLength = Number(value);
    } else if (lower === 'x-forwarded-for') {
      forwardedFor = forwardedFor === undefined ? value : `${forwardedFor}, ${value}`;
    } else if (lower === 'connection') {
      for (const token of value.toLowerCase().split(',')) {
        const option = token.trim();
        if (option === 'close') close = true;
        else if (option !== 'keep-alive') return undefined;
      }
    }
    raw.push(name, value);
  }
  if (host === undefined) return undefined;
  return {
    method: start[1] ?? '',
    target: start[2] ?? '',
    raw,
    host,
    contentLength: contentLength ?? 0,
    forwardedFor,
    close,
  };
}

/** How a response's body ends (RFC 9112 §6.3). */
export type Framing =
  | { readonly kind: 'length'; readonly length: number }
  | { readonly kind: 'chunked' }
  | { readonly kind: 'close' };

export interface ResponseHead {
  readonly status: number;
  readonly raw: readonly string[];
  readonly framing: Framing;
  /**
   * How long the instance keeps its end of the connection open for another request after this
   * one: 0 when it closes it (HTTP/1.0, `Connection: close`), undefined when it does not say.
   */
  readonly keepsOpenMs: number | undefined;
}

const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5][0-9]{2})(?: [\x20-\x7e\t\x80-\xff]*)?$/;
const KEEP_ALIVE_TIMEOUT = /(?:^|[ ,])timeout=([0-9]{1,6})(?:$|[ ,])/;
// The instance controls every byte: values may carry obs-text (as Node's parser allows), never CR, LF or NUL.
const RESPONSE_FIELD = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x20-\x7e\t\x80-\xff]*?)[ \t]*$/;

/**
 * The response head in `buffer[0, end)`, or undefined when it is malformed or its framing is
 * ambiguous (both Content-Length and Transfer-Encoding, two lengths, a coding other than chunked).
 */
export function parseResponseHead(buffer: Buffer, end: number, method: string): ResponseHead | undefined {
  const lines = buffer.toString('latin1', 0, end - 4).split('\r\n');
  const start = STATUS_LINE.exec(lines[0] ?? '');
  if (start === null) return undefined;
  const status = Number(start[2]);
  const raw: string[] = [];
  let length: string | undefined;
  let coding: string | undefined;
  let keepsOpenMs: number | undefined = start[1] === '0' ? 0 : undefined;
  for (let i = 1; i < lines.length; i++) {
    const field = RESPONSE_FIELD.exec(lines[i] ?? '');
    if (field === null) return undefined;
    const name = field[1] ?? '';
    const value = field[2] ?? '';
    const lower = name.toLowerCase();
    if (lower === 'content-length') {
      if ((length !== undefined && length !== value) || !DIGITS.test(value)) return undefined;
      length = value;
    } else if (lower === 'transfer-encoding') {
      if (coding !== undefined) return undefined;
      coding = value.toLowerCase();
    } else if (lower === 'connection') {
      if (value.toLowerCase().includes('close')) keepsOpenMs = 0;
    } else if (lower === 'keep-alive' && keepsOpenMs !== 0) {
      const timeout = KEEP_ALIVE_TIMEOUT.exec(value);
      if (timeout !== null) keepsOpenMs = Number(timeout[1]) * 1000;
    }
    raw.push(name, value);
  }
  if (coding !== undefined && (coding !== 'chunked' || length !== undefined)) return undefined;
  const bodiless = method === 'HEAD' || status < 200 || status === 204 || status === 304;
  const framing: Framing = bodiless
    ? { kind: 'length', length: 0 }
    : coding !== undefined
      ? { kind: 'chunked' }
      : length !== undefined
        ? { kind: 'length', length: Number(length) }
        : { kind: 'close' };
  return { status, raw, framing, keepsOpenMs };
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

/** A head as bytes: `line`, then each header pair, then the blank line (latin1: the bytes received). */
export function serializeHead(line: string, headers: readonly string[]): Buffer {
  let head = `${line}\r\n`;
  for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return Buffer.from(`${head}\r\n`, 'latin1');
}
