import { readFileSync } from 'node:fs';
import os from 'node:os';
import { type IpRange, parseIp, parseIpRange } from './destinations.ts';

// The addresses the host itself answers on (AGT-4): a service of the host
// bound to 0.0.0.0 or :: is reachable at every one of them, so the egress
// proxy refuses them as class 'host' (destinations.ts), whatever range they
// sit in. The source of truth is the kernel's local routing table, not
// os.networkInterfaces(): libuv lists only interfaces that are up and have a
// carrier, yet the kernel delivers locally to an address on an interface
// without one (docker0 with no container), or even one that is down, and to
// whole ranges routed `local` (AnyIP). Linux shows that table in
// /proc/net/fib_trie (IPv4) and /proc/net/ipv6_route (IPv6);
// os.networkInterfaces() is added for a kernel without them.

/** How long one reading is used before the next connection reads again. */
export const HOST_ADDRESSES_MAX_AGE_MS = 1000;

const FIB_LEAF = /^\s*\|-- (\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/;
const FIB_LOCAL = /^\s*\/(\d{1,2}) \w+ LOCAL\b/;
const RTF_LOCAL = 0x8000_0000;

/** The LOCAL routes of /proc/net/fib_trie: a leaf line `|-- a.b.c.d`, then one line per prefix `/n scope TYPE`. */
export function parseFibTrieLocals(text: string): IpRange[] {
  const ranges: IpRange[] = [];
  let leaf: string | undefined;
  for (const line of text.split('\n')) {
    const key = FIB_LEAF.exec(line)?.[1];
    if (key !== undefined) {
      leaf = key;
      continue;
    }
    const bits = FIB_LOCAL.exec(line)?.[1];
    const range = leaf === undefined || bits === undefined ? undefined : parseIpRange(`${leaf}/${bits}`);
    if (range !== undefined) ranges.push(range);
  }
  return ranges;
}

/** The routes of /proc/net/ipv6_route flagged RTF_LOCAL: `dest destlen src srclen nexthop metric refcnt use flags dev`. */
export function parseIpv6RouteLocals(text: string): IpRange[] {
  const ranges: IpRange[] = [];
  for (const line of text.split('\n')) {
    const [dest, destLength, , , , , , , flags] = line.trim().split(/\s+/);
    if (dest === undefined || !/^[0-9a-f]{32}$/i.test(dest) || flags === undefined) continue;
    if ((Number.parseInt(flags, 16) & RTF_LOCAL) === 0) continue;
    const groups = dest.match(/.{4}/g) ?? [];
    const range = parseIpRange(`${groups.join(':')}/${Number.parseInt(destLength ?? '', 16)}`);
    if (range !== undefined) ranges.push(range);
  }
  return ranges;
}

/** Each address os.networkInterfaces() lists, as a single-address range. */
export function interfaceRanges(interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]>): IpRange[] {
  const ranges: IpRange[] = [];
  for (const entries of Object.values(interfaces)) {
    for (const entry of entries ?? []) {
      const address = parseIp(entry.address);
      if (address !== undefined)
        ranges.push({ family: address.family, base: address.value, bits: address.family === 4 ? 32 : 128 });
    }
  }
  return ranges;
}

/** procfs is generated in memory: a synchronous read never waits on a disk, nor takes the thread pool. */
function readProc(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return ''; // not Linux, or IPv6 disabled: os.networkInterfaces() still counts
  }
}

/** Every range the host answers on now, deduplicated. */
export function readHostRanges(): IpRange[] {
  const all = [
    ...parseFibTrieLocals(readProc('/proc/net/fib_trie')),
    ...parseIpv6RouteLocals(readProc('/proc/net/ipv6_route')),
    ...interfaceRanges(os.networkInterfaces()),
  ];
  const unique = new Map(all.map((range) => [`${range.family}/${range.base}/${range.bits}`, range]));
  return [...unique.values()];
}

/**
 * The host's ranges, read again when the last reading is older than
 * HOST_ADDRESSES_MAX_AGE_MS. Node has no event for an address change; a read
 * per connection would cost every connection a walk of the routing table,
 * and a timer would outlive the proxy (which has no close). So an address
 * the host gains is refused from the first connection after at most a
 * second; only the host itself changes its addresses, never an agent.
 */
export function createHostAddressReader(): () => readonly IpRange[] {
  let ranges: readonly IpRange[] = [];
  let readAt = Number.NEGATIVE_INFINITY;
  return () => {
    const now = performance.now();
    if (now - readAt >= HOST_ADDRESSES_MAX_AGE_MS) {
      ranges = readHostRanges();
      readAt = now;
    }
    return ranges;
  };
}
