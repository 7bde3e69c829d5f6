// The egress proxy's destination policy (AGT-4), pure: which hosts an agent
// names, whether its allowlist admits them, and whether the addresses they
// resolve to are public. No I/O here; proxy.ts resolves and connects.
//
// Terminology: the *target* is what the agent asked for (a CONNECT authority
// or an absolute http:// URL); its *host* is the name or IP literal in it,
// normalised by the WHATWG URL parser; the *destination* is one resolved
// address the proxy may connect to.

export type IpFamily = 4 | 6;

/** An IP address as a number: 32 bits for IPv4, 128 for IPv6. */
export interface IpAddress {
  readonly family: IpFamily;
  readonly value: bigint;
}

export type DestinationClass =
  | 'public'
  | 'loopback'
  | 'unspecified'
  | 'private'
  | 'link-local'
  | 'shared'
  | 'metadata'
  | 'multicast'
  | 'broadcast'
  | 'reserved'
  | 'benchmarking'
  | 'documentation';

export type Verdict = { readonly allowed: true } | { readonly allowed: false; readonly reason: string };

const ALLOWED: Verdict = Object.freeze({ allowed: true });
const refuse = (reason: string): Verdict => ({ allowed: false, reason });

// ---------------------------------------------------------------- parsing

const V4_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const V6_GROUP = /^[0-9a-f]{1,4}$/i;

/** A canonical dotted quad (no octal, hex, short or integer forms: the URL parser has turned those into this). */
function parseIpv4(text: string): bigint | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!V4_OCTET.test(part) || Number(part) > 255) return undefined;
    value = (value << 8n) | BigInt(part);
  }
  return value;
}

function parseIpv6(text: string): bigint | undefined {
  // A zone (fe80::1%eth0) names an interface, not a different address: classified without it.
  const bare = text.split('%', 1)[0] ?? '';
  const halves = bare.split('::');
  if (halves.length > 2) return undefined;
  const groups = (half: string | undefined): number[] | undefined => {
    if (half === undefined || half === '') return [];
    const out: number[] = [];
    const parts = half.split(':');
    for (const [i, part] of parts.entries()) {
      if (i === parts.length - 1 && part.includes('.')) {
        const v4 = parseIpv4(part);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else if (V6_GROUP.test(part)) {
        out.push(Number.parseInt(part, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = groups(halves[1]);
  if (head === undefined || tail === undefined) return undefined;
  const compressed = halves.length === 2;
  const missing = 8 - head.length - tail.length;
  if (compressed ? missing < 1 : missing !== 0) return undefined;
  // An embedded IPv4 is only valid at the very end.
  if (halves[0]?.includes('.') === true && compressed) return undefined;
  let value = 0n;
  for (const group of [...head, ...Array<number>(missing).fill(0), ...tail])
    value = (value << 16n) | BigInt(group);
  return value;
}

/** An IP address in canonical text form (brackets allowed around IPv6), or undefined. */
export function parseIp(text: string): IpAddress | undefined {
  const unbracketed = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (unbracketed.includes(':')) {
    const value = parseIpv6(unbracketed);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseIpv4(unbracketed);
  return value === undefined ? undefined : { family: 4, value };
}

// ---------------------------------------------------------------- ranges

export interface IpRange {
  readonly family: IpFamily;
  readonly base: bigint;
  readonly bits: number;
}

const width = (family: IpFamily): bigint => (family === 4 ? 32n : 128n);

/** `a.b.c.d/n`, `v6::/n` or a single address; undefined if it is not one. */
export function parseIpRange(text: string): IpRange | undefined {
  const [ip, bits, extra] = text.trim().split('/');
  if (ip === undefined || extra !== undefined) return undefined;
  const address = parseIp(ip);
  if (address === undefined) return undefined;
  const max = Number(width(address.family));
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
  if (!(prefix >= 0 && prefix <= max)) return undefined;
  const shift = BigInt(max - prefix);
  return { family: address.family, base: (address.value >> shift) << shift, bits: prefix };
}

export function rangeContains(range: IpRange, address: IpAddress): boolean {
  if (range.family !== address.family) return false;
  const shift = width(range.family) - BigInt(range.bits);
  return address.value >> shift === range.base >> shift;
}

/** Parses the operator's allow ranges (config.egressAllow, validated at boot); throws on one that is not a range. */
export function parseAllowRanges(ranges: readonly string[]): readonly IpRange[] {
  return ranges.map((text) => {
    const range = parseIpRange(text);
    if (range === undefined) throw new Error(`not an IP range: ${text}`);
    return range;
  });
}

// ---------------------------------------------------------------- classes

function table(entries: readonly (readonly [string, DestinationClass])[]) {
  return entries.map(([cidr, kind]) => {
    const range = parseIpRange(cidr);
    if (range === undefined) throw new Error(`bad built-in range ${cidr}`);
    return { range, kind };
  });
}

// First match wins, so single addresses come before the ranges holding them.
const SPECIAL_V4 = table([
  ['169.254.169.254/32', 'metadata'], // AWS, GCP, Azure, OpenStack, Oracle instance metadata
  ['100.100.100.200/32', 'metadata'], // Alibaba Cloud
  ['168.63.129.16/32', 'metadata'], // Azure WireServer: a public-looking address serving the VM's platform
  ['255.255.255.255/32', 'broadcast'],
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'shared'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'],
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'],
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'benchmarking'],
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
]);

const SPECIAL_V6 = table([
  ['fd00:ec2::254/128', 'metadata'], // AWS over IPv6
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['::/96', 'reserved'], // deprecated IPv4-compatible addresses
  ['64:ff9b:1::/48', 'private'], // local-use NAT64
  ['100::/64', 'reserved'], // discard-only
  ['2001:2::/48', 'benchmarking'],
  ['2001:db8::/32', 'documentation'],
  ['2001::/23', 'reserved'], // IETF protocol assignments: Teredo, ORCHID …
  ['3fff::/20', 'documentation'],
  ['fc00::/7', 'private'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'private'], // deprecated site-local
  ['ff00::/8', 'multicast'],
]);

const GLOBAL_UNICAST_V6 = table([['2000::/3', 'public']]);

/** The IPv4 address an IPv6 one stands for: IPv4-mapped, NAT64 (well-known prefix) or 6to4. */
export function embeddedIpv4(address: IpAddress): IpAddress | undefined {
  if (address.family !== 6) return undefined;
  const v = address.value;
  if (v >> 32n === 0xffffn) return { family: 4, value: v & 0xffffffffn }; // ::ffff:a.b.c.d
  if (v >> 32n === 0x0064ff9b_00000000_00000000n) return { family: 4, value: v & 0xffffffffn }; // 64:ff9b::/96
  if (v >> 112n === 0x2002n) return { family: 4, value: (v >> 80n) & 0xffffffffn }; // 2002:aabb:ccdd::/48
  return undefined;
}

/** What kind of address this is; IPv6 forms of an IPv4 address are classified as that IPv4 address. */
export function classifyIp(address: IpAddress): DestinationClass {
  const effective = embeddedIpv4(address) ?? address;
  const entries = effective.family === 4 ? SPECIAL_V4 : SPECIAL_V6;
  const match = entries.find((entry) => rangeContains(entry.range, effective));
  if (match !== undefined) return match.kind;
  if (effective.family === 6 && !GLOBAL_UNICAST_V6.some((entry) => rangeContains(entry.range, effective))) {
    return 'reserved';
  }
  return 'public';
}

/**
 * Classes an allow range re-opens only when it names the one address (/32 or
 * /128): a wider range such as 10.0.0.0/8, allowed for a private service,
 * must not hand agents the host's own services (its loopback, any address of
 * its interfaces, the platform's public address) or the cloud's credentials.
 */
const EXACT_ALLOW_ONLY: ReadonlySet<DestinationClass | 'host'> = new Set([
  'host',
  'loopback',
  'unspecified',
  'metadata',
]);

/**
 * Whether the proxy may connect to `address` (one resolved or literal
 * address). `host` holds the ranges the host itself answers on (host-addresses.ts):
 * those are refused as class 'host' whatever their class would be. Public
 * addresses are allowed; any other class only inside an operator allow range,
 * and the classes of EXACT_ALLOW_ONLY only when a range names the address alone.
 */
export function destinationVerdict(
  addressText: string,
  allow: readonly IpRange[],
  host: readonly IpRange[],
): Verdict {
  // addressText comes from DNS (which the agent may control) or from the agent's own request.
  const address = parseIp(addressText);
  if (address === undefined) return refuse(`not an IP address: ${addressText.slice(0, 60)}`);
  const forms = [address, embeddedIpv4(address)].filter((form) => form !== undefined);
  const special = classifyIp(address);
  // Loopback and unspecified keep their own names: every host answers on them, listed or not.
  const onHost =
    special !== 'loopback' &&
    special !== 'unspecified' &&
    host.some((range) => forms.some((form) => rangeContains(range, form)));
  const kind = onHost ? 'host' : special;
  if (kind === 'public') return ALLOWED;
  const exactOnly = EXACT_ALLOW_ONLY.has(kind);
  const allowed = allow.some(
    (range) =>
      (!exactOnly || range.bits === Number(width(range.family))) &&
      forms.some((form) => rangeContains(range, form)),
  );
  return allowed ? ALLOWED : refuse(`${kind} address ${addressText}`);
}

// ---------------------------------------------------------------- targets

export interface Target {
  /** Normalised host: lowercase name without a trailing dot, or an IP literal without brackets. */
  readonly host: string;
  /** Set when the host is an IP literal: it is checked as is, never resolved. */
  readonly ip: IpAddress | undefined;
  readonly port: number;
}

/**
 * The host as the WHATWG URL parser normalises it: lowercase, IDNA, and every
 * IPv4 spelling (2130706433, 0x7f.1, 0177.0.0.1, 127.1) turned into a dotted
 * quad, so no spelling of a refused address reaches the checks unrecognised.
 */
function normaliseHost(raw: string): { host: string; ip: IpAddress | undefined } | undefined {
  let hostname: string;
  try {
    hostname = new URL(`http://${raw}/`).hostname;
  } catch {
    return undefined;
  }
  const bare = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname.replace(/\.$/, '');
  if (bare === '') return undefined;
  return { host: bare, ip: parseIp(bare) };
}

// A name or bracketed IPv6 literal, then a port: nothing the URL parser would read as userinfo, path or query.
const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/?#@[\]\\%]+):([0-9]{1,5})$/;

/** A CONNECT request's authority-form target (`host:port`); undefined if it is not one. */
export function parseConnectTarget(authority: string): Target | undefined {
  // authority is attacker-controlled: a strict shape first, then the URL parser's normalisation.
  const match = AUTHORITY.exec(authority);
  const port = Number(match?.[2]);
  if (match?.[1] === undefined || !(port >= 1 && port <= 65535)) return undefined;
  const host = normaliseHost(match[1]);
  return host === undefined ? undefined : { ...host, port };
}

export type HttpTarget =
  | { readonly ok: true; readonly target: Target; readonly path: string; readonly authority: string }
  | { readonly ok: false; readonly reason: string; readonly target: Target | undefined };

/** A plain-HTTP proxy request's absolute-form target (`http://host[:port]/path?query`). */
export function parseHttpTarget(requestTarget: string): HttpTarget {
  // requestTarget is attacker-controlled; only the URL parser's reading of it is used.
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(requestTarget)) {
    return {
      ok: false,
      reason: 'not a proxy request: the request target must be an absolute http:// URL',
      target: undefined,
    };
  }
  let url: URL;
  try {
    url = new URL(requestTarget);
  } catch {
    return { ok: false, reason: 'the request target is not a valid URL', target: undefined };
  }
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  const host = normaliseHost(url.host);
  const target = host === undefined || port === 0 ? undefined : { ...host, port };
  if (url.protocol !== 'http:') {
    return {
      ok: false,
      reason: `${url.protocol.slice(0, 20)} URLs go through CONNECT, not plain forwarding`,
      target,
    };
  }
  if (target === undefined)
    return { ok: false, reason: 'the URL has no usable host or port', target: undefined };
  return { ok: true, target, path: `${url.pathname}${url.search}`, authority: url.host };
}

// ---------------------------------------------------------------- allowlist

const normaliseName = (name: string): string => name.trim().toLowerCase().replace(/\.$/, '');

/**
 * Whether the agent's allowlist admits the target's host. undefined: open.
 * Entries are exact names or `*.suffix` (subdomains only, not the bare
 * suffix); IP literals pass only when listed exactly.
 */
export function allowlistVerdict(
  target: Pick<Target, 'host' | 'ip'>,
  allowlist: readonly string[] | undefined,
): Verdict {
  if (allowlist === undefined) return ALLOWED;
  const listed = allowlist.some((raw) => {
    const entry = normaliseName(raw);
    if (target.ip !== undefined) {
      const ip = parseIp(entry);
      return ip !== undefined && ip.family === target.ip.family && ip.value === target.ip.value;
    }
    if (entry.startsWith('*.')) {
      const suffix = entry.slice(1); // ".example.com"
      return suffix.length > 1 && target.host.endsWith(suffix) && target.host.length > suffix.length;
    }
    return entry !== '' && entry === target.host;
  });
  return listed ? ALLOWED : refuse("not in the agent's egress allowlist");
}
