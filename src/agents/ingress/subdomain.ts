import { randomInt } from 'node:crypto';

// AGT-3: an instance is reached at `<subdomain>.<agents domain>`. The
// subdomain is the template's 2-character prefix and 8 characters drawn
// uniformly from [a-z0-9] (36^8 ≈ 2.8e12 names per prefix): unguessable, so
// only its owner, who sees it in the dashboard and API, can reach the instance.

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
const RANDOM_CHARS = 8;
const PREFIX = /^[a-z0-9]{2}$/;
const SUBDOMAIN = /^[a-z0-9]{10}$/;
/** The longest port a Host header may carry: 65535. */
const PORT = /^[0-9]{1,5}$/;

/** A fresh subdomain: `prefix` (a template's `[a-z0-9]{2}`) and 8 random `[a-z0-9]`. */
export function newSubdomain(prefix: string): string {
  if (!PREFIX.test(prefix)) throw new TypeError('a subdomain prefix is exactly 2 characters of [a-z0-9]');
  let subdomain = prefix;
  for (let i = 0; i < RANDOM_CHARS; i++) subdomain += ALPHABET[randomInt(ALPHABET.length)];
  return subdomain;
}

const ASCII_UPPER = /[A-Z]/;

/** ASCII-only lowercasing: Unicode case mapping can turn a non-ASCII letter into an ASCII one (U+212A → k). */
function asciiLowercase(value: string): string {
  // Most Hosts are lowercase already: nothing to replace.
  return ASCII_UPPER.test(value) ? value.replace(/[A-Z]+/g, (letters) => letters.toLowerCase()) : value;
}

/** Whether `name` is `domain` or a name under it. */
function within(name: string, domain: string): boolean {
  if (name.length === domain.length) return name === domain;
  // The dot before the domain, checked by position: no `.${domain}` string made per request.
  const dot = name.length - domain.length - 1;
  return dot >= 0 && name.charCodeAt(dot) === 0x2e && name.endsWith(domain);
}

/**
 * The instance subdomain a Host header names: undefined when the Host is not
 * under `agentsDomain` (the platform serves it), 'malformed' when it is under
 * it but is not exactly `<10 × [a-z0-9]>.<agentsDomain>` with an optional
 * port from 0 to 65535. `agentsDomain` is the config's lowercase domain.
 */
export function subdomainOf(host: string, agentsDomain: string): string | undefined | 'malformed' {
  // The attacker controls the whole Host value: anything but the one exact form under our domain is refused.
  const value = asciiLowercase(host);
  // An IP literal ([::1]:80, or a bare IPv6 address) is never under a domain name.
  if (value.startsWith('[')) return undefined;
  // Up to the first colon: a bare IPv6 address then has an empty name, and `name:80:80` a bad port.
  const colon = value.indexOf(':');
  const name = colon === -1 ? value : value.slice(0, colon);
  // One trailing dot (the absolute form) still names the domain; it is claimed, then refused.
  const absolute = name.endsWith('.');
  const bare = absolute ? name.slice(0, -1) : name;
  if (!within(bare, agentsDomain)) return undefined;
  if (absolute || bare === agentsDomain) return 'malformed';
  if (colon !== -1) {
    const port = value.slice(colon + 1);
    if (!PORT.test(port) || Number(port) > 65535) return 'malformed';
  }
  const label = bare.slice(0, -(agentsDomain.length + 1));
  return SUBDOMAIN.test(label) ? label : 'malformed';
}
