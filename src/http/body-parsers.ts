import type { IncomingMessage } from 'node:http';
import type { App } from './app.ts';

// Bodies are decoded strictly: invalid UTF-8 is a 400, never silently turned
// into U+FFFD; form fields appear once each. Attackers control every byte.

const utf8 = new TextDecoder('utf-8', { fatal: true });

export class BodyParseError extends Error {
  readonly statusCode = 400;
}

export class UnsupportedMediaTypeError extends Error {
  readonly statusCode = 415;
}

// Own "__proto__" keys are harmless to JSON.parse but dangerous to any later merge.
function noPrototypeKeys(key: string, value: unknown): unknown {
  if (key === '__proto__') throw new BodyParseError('the body has a "__proto__" key');
  return value;
}

function decode(bytes: Uint8Array): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw new BodyParseError('the body is not valid UTF-8');
  }
}

function percentDecode(text: string): string {
  const plus = text.replaceAll('+', ' ');
  const bytes: number[] = [];
  for (let i = 0; i < plus.length; i += 1) {
    const ch = plus.charCodeAt(i);
    if (ch === 0x25) {
      const hex = plus.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw new BodyParseError('malformed percent-encoding');
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (ch > 0x7e || ch < 0x20) {
      throw new BodyParseError('a form body must be ASCII with percent-encoding');
    } else {
      bytes.push(ch);
    }
  }
  return decode(Uint8Array.from(bytes));
}

export function parseForm(body: Buffer): Record<string, string> {
  const fields: Record<string, string> = Object.create(null);
  const text = decode(body);
  if (text === '') return fields;
  for (const pair of text.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = percentDecode(eq === -1 ? pair : pair.slice(0, eq));
    const value = percentDecode(eq === -1 ? '' : pair.slice(eq + 1));
    if (key === '__proto__') throw new BodyParseError('the form has a "__proto__" field');
    if (Object.hasOwn(fields, key)) throw new BodyParseError(`the field "${key.slice(0, 40)}" appears twice`);
    fields[key] = value;
  }
  return fields;
}

export function registerBodyParsers(app: App): void {
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body: Buffer, done) => {
    if (body.length === 0) {
      done(new BodyParseError('the body is empty'), undefined);
      return;
    }
    try {
      done(null, JSON.parse(decode(body), noPrototypeKeys));
    } catch (error) {
      done(
        error instanceof BodyParseError ? error : new BodyParseError('the body is not valid JSON'),
        undefined,
      );
    }
  });
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'buffer' },
    (request, body: Buffer, done) => {
      // Forms are for the pages; the JSON API takes JSON only.
      if (request.url.startsWith('/api/')) {
        done(new UnsupportedMediaTypeError('the API accepts application/json only'), undefined);
        return;
      }
      try {
        done(null, parseForm(body));
      } catch (error) {
        done(error as Error, undefined);
      }
    },
  );
}

/** How much of a refused body is read and thrown away so that the client can read the 413. */
export const DISCARD_LIMIT_BYTES = 16 * 1024 * 1024;
const DISCARD_WAIT_MS = 5_000;

/**
 * Reads and discards what is left of a refused request body, up to a bound in
 * bytes and in time, before the 413 is sent. A client that writes its whole
 * body before reading (as curl does) otherwise gets a reset from a socket
 * closed under its upload, and the kernel drops the unread 413 with it. Past
 * the bound the connection is closed anyway: the client controls the size and
 * the pace, and holding the request longer is theirs to exploit. Resolves
 * whether the body ended.
 */
export function discardBody(raw: IncomingMessage, limit = DISCARD_LIMIT_BYTES): Promise<boolean> {
  if (raw.readableEnded || raw.destroyed) return Promise.resolve(raw.readableEnded);
  if (Number(raw.headers['content-length']) > limit) return Promise.resolve(false);
  return new Promise((resolve) => {
    let received = 0;
    const finish = (ended: boolean) => {
      clearTimeout(timer);
      raw.off('data', onData);
      raw.off('end', onEnd);
      raw.off('error', onStop);
      raw.off('close', onStop);
      resolve(ended);
    };
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > limit) finish(false);
    };
    const onEnd = () => finish(true);
    const onStop = () => finish(false);
    const timer = setTimeout(onStop, DISCARD_WAIT_MS);
    raw.on('data', onData);
    raw.once('end', onEnd);
    raw.once('error', onStop);
    raw.once('close', onStop);
    raw.resume();
  });
}
