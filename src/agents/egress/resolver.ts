import { Resolver } from 'node:dns/promises';

// How the egress proxy resolves an agent's names (AGT-4, AGT-6): with c-ares
// (dns.promises.Resolver), which queries the DNS servers over sockets of the
// event loop. dns.lookup would call getaddrinfo in libuv's thread pool, the
// four threads that scrypt (sign-in) and file I/O wait for too: an agent
// naming hosts at a resolver that never answers held all of them.
//
// c-ares reads the servers from /etc/resolv.conf when the proxy is created,
// and neither /etc/hosts nor search domains: an agent's names are asked of
// DNS exactly as given (the host's own /etc/hosts aliases are not the
// agent's to use). localhost and *.localhost are answered here with the
// loopback addresses, without a query, as RFC 6761 §6.3 asks of resolvers;
// the address checks then refuse them like any loopback address.

export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

export type LookupFn = (host: string) => Promise<readonly ResolvedAddress[]>;

const LOOPBACK: readonly ResolvedAddress[] = Object.freeze([
  { address: '127.0.0.1', family: 4 },
  { address: '::1', family: 6 },
]);

const codeOf = (error: unknown): unknown => (error as { code?: unknown } | undefined)?.code;

/**
 * A LookupFn over c-ares: A and AAAA asked in parallel, both answers used.
 * One family's NODATA is an answer (the name has no address of that family),
 * so a name with addresses of either family resolves; with none, the error
 * that matters is thrown (ETIMEOUT first), or NODATA for both gives [].
 */
export function createCaresLookup(options: { timeoutMs: number; servers?: readonly string[] }): LookupFn {
  // c-ares waits `timeout`, then twice that for the second try: about 3 × timeout before it gives up.
  const resolver = new Resolver({ timeout: Math.max(1, Math.ceil(options.timeoutMs / 3)), tries: 2 });
  if (options.servers !== undefined) resolver.setServers([...options.servers]);
  return async (host) => {
    if (host === 'localhost' || host.endsWith('.localhost')) return LOOPBACK;
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    const found: ResolvedAddress[] = [
      ...(v4.status === 'fulfilled' ? v4.value.map((address) => ({ address, family: 4 as const })) : []),
      ...(v6.status === 'fulfilled' ? v6.value.map((address) => ({ address, family: 6 as const })) : []),
    ];
    if (found.length > 0) return found;
    const errors = [v4, v6].flatMap((result) => (result.status === 'rejected' ? [result.reason] : []));
    const failure =
      errors.find((error) => codeOf(error) === 'ETIMEOUT') ??
      errors.find((error) => codeOf(error) !== 'ENODATA');
    if (failure !== undefined) throw failure;
    return [];
  };
}
