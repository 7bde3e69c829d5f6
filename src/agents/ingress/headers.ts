// AGT-3: the ingress's header rules, shared by its two paths (proxy.ts through
// Node's HTTP objects, fast-path.ts over raw sockets): what a request may carry
// to an instance, and what an instance's response may carry back.

import { connectionListed, HOP_BY_HOP } from '../../http/hop-by-hop.ts';
import type { HeadLines } from './raw-http.ts';

/** The platform's cookies (the session cookie `enclave_session`) share this prefix; none reaches an instance. */
export const PLATFORM_COOKIE_PREFIX = 'enclave_';

/** Request headers the ingress sets itself, whatever the client sent (expect: the server already answered 100). */
const SET_BY_INGRESS = new Set([
  'host',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-real-ip',
  'expect',
]);

/** The Cookie header without the platform's cookies; '' when none is left. */
function withoutPlatformCookies(cookie: string): string {
  return cookie
    .split(';')
    .map((pair) => pair.trim())
    .filter((pair) => pair !== '' && !pair.startsWith(PLATFORM_COOKIE_PREFIX))
    .join('; ');
}

/** Whether every Domain attribute of a Set-Cookie value stays within the instance's own host. */
function cookieStaysOnHost(setCookie: string, instanceHost: string): boolean {
  // The instance controls the value: Domain=<agents domain> or a parent would plant cookies on its
  // siblings or on the platform itself (cookie tossing, session fixation).
  for (const attribute of setCookie.split(';').slice(1)) {
    const equals = attribute.indexOf('=');
    const name = (equals === -1 ? attribute : attribute.slice(0, equals)).trim().toLowerCase();
    if (name !== 'domain') continue;
    const domain = (equals === -1 ? '' : attribute.slice(equals + 1)).trim().toLowerCase().replace(/^\./, '');
    if (domain !== instanceHost && !domain.endsWith(`.${instanceHost}`)) return false;
  }
  return true;
}

/** Who sent a request, as the instance is told in x-forwarded-*. */
export interface Forwarding {
  /** The validated Host (lowercase, with its port if any). */
  readonly host: string;
  readonly clientAddress: string;
  readonly proto: 'http' | 'https';
}

/**
 * What an instance receives of a request header (`lower` is its name in lowercase, `listed` the
 * names the request's Connection header lists): undefined when it stops here, else its value.
 */
function requestValue(lower: string, value: string, listed: ReadonlySet<string>): string | undefined {
  // The client controls every header: hop-by-hop ones, forwarding claims and platform cookies stop here.
  if (HOP_BY_HOP.has(lower) || SET_BY_INGRESS.has(lower) || listed.has(lower)) return undefined;
  if (lower !== 'cookie') return value;
  const kept = withoutPlatformCookies(value);
  return kept === '' ? undefined : kept;
}

/** Whether an instance's response header (`lower` is its name in lowercase) reaches the client. */
function responseKept(
  lower: string,
  value: string,
  listed: ReadonlySet<string>,
  keep: ReadonlySet<string>,
  instanceHost: string,
): boolean {
  if (!keep.has(lower) && (HOP_BY_HOP.has(lower) || listed.has(lower))) return false;
  return lower !== 'set-cookie' || cookieStaysOnHost(value, instanceHost);
}

/** The header pairs an instance receives for a request whose header pairs (as sent) are `raw`. */
export function requestHeaders(raw: readonly string[], forwarding: Forwarding, upgrade?: string): string[] {
  const listed = connectionListed(raw);
  const headers: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const value = requestValue(name.toLowerCase(), raw[i + 1] ?? '', listed);
    if (value !== undefined) headers.push(name, value);
  }
  headers.push(
    'host',
    forwarding.host,
    'x-forwarded-for',
    forwarding.clientAddress,
    'x-forwarded-proto',
    forwarding.proto,
    'x-forwarded-host',
    forwarding.host,
  );
  if (upgrade !== undefined) headers.push('connection', 'upgrade', 'upgrade', upgrade);
  return headers;
}

/**
 * The header pairs a client receives for an instance's response whose pairs are `raw`: no
 * hop-by-hop header but those in `keep`, and no cookie for another host.
 */
export function responseHeaders(
  raw: readonly string[],
  instanceHost: string,
  keep: ReadonlySet<string>,
): string[] {
  const listed = connectionListed(raw);
  const headers: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const value = raw[i + 1] ?? '';
    if (responseKept(name.toLowerCase(), value, listed, keep, instanceHost)) headers.push(name, value);
  }
  return headers;
}

/**
 * `head`'s header lines with `value(i)` for each (i: the header's index): the line as it arrived
 * where that is its value, a line with the new value where it differs, none where undefined.
 * Lines passed as they are go as runs of the text, not line by line.
 */
function passLines(head: HeadLines, value: (i: number, sent: string) => string | undefined): string {
  const { text, raw, spans } = head;
  let out = '';
  let run = -1;
  let runEnd = 0;
  for (let i = 0; 2 * i + 1 < raw.length; i++) {
    const sent = raw[2 * i + 1] ?? '';
    const passed = value(i, sent);
    if (passed === sent) {
      if (run === -1) run = spans[2 * i] ?? 0;
      runEnd = spans[2 * i + 1] ?? 0;
      continue;
    }
    if (run !== -1) out += `${text.slice(run, runEnd)}\r\n`;
    run = -1;
    if (passed !== undefined) out += `${raw[2 * i]}: ${passed}\r\n`;
  }
  if (run !== -1) out += `${text.slice(run, runEnd)}\r\n`;
  return out;
}

/**
 * The head an instance receives for the request read as `head` (the same rules as
 * requestHeaders): `line`, then what passes of the client's header lines, then the forwarding
 * headers, then the blank line.
 */
export function requestHeadText(line: string, head: HeadLines, forwarding: Forwarding): string {
  const listed = connectionListed(head.raw);
  const { lower } = head;
  const lines = passLines(head, (i, sent) => requestValue(lower[i] ?? '', sent, listed));
  return (
    `${line}\r\n${lines}host: ${forwarding.host}\r\nx-forwarded-for: ${forwarding.clientAddress}\r\n` +
    `x-forwarded-proto: ${forwarding.proto}\r\nx-forwarded-host: ${forwarding.host}\r\n\r\n`
  );
}

/**
 * The head a client receives for the response read as `head` (the same rules as
 * responseHeaders): `line`, then what passes of the instance's header lines, then `last` (the
 * ingress's own header lines), then the blank line.
 */
export function responseHeadText(
  line: string,
  head: HeadLines,
  instanceHost: string,
  keep: ReadonlySet<string>,
  last: string,
): string {
  const listed = connectionListed(head.raw);
  const { lower } = head;
  const lines = passLines(head, (i, sent) =>
    responseKept(lower[i] ?? '', sent, listed, keep, instanceHost) ? sent : undefined,
  );
  return `${line}\r\n${lines}${last}\r\n`;
}
