// AGT-3: the ingress's header rules, shared by its two paths (proxy.ts through
// Node's HTTP objects, fast-path.ts over raw sockets): what a request may carry
// to an instance, and what an instance's response may carry back.

import { connectionListed, HOP_BY_HOP } from '../../http/hop-by-hop.ts';

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

/** The header pairs an instance receives for a request whose header pairs (as sent) are `raw`. */
export function requestHeaders(raw: readonly string[], forwarding: Forwarding, upgrade?: string): string[] {
  // The client controls every header: hop-by-hop ones, forwarding claims and platform cookies stop here.
  const listed = connectionListed(raw);
  const headers: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    const value = raw[i + 1] ?? '';
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || SET_BY_INGRESS.has(lower) || listed.has(lower)) continue;
    if (lower === 'cookie') {
      const kept = withoutPlatformCookies(value);
      if (kept !== '') headers.push(name, kept);
      continue;
    }
    headers.push(name, value);
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
    const lower = name.toLowerCase();
    if (!keep.has(lower) && (HOP_BY_HOP.has(lower) || listed.has(lower))) continue;
    if (lower === 'set-cookie' && !cookieStaysOnHost(value, instanceHost)) continue;
    headers.push(name, value);
  }
  return headers;
}
