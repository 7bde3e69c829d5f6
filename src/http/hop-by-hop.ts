// Connection-level headers (RFC 9110 §7.6.1), which a proxy never passes on:
// the fixed ones, and those a message's own Connection header names. The
// ingress, the egress proxy and the model gateway all drop them.

export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Header names listed in Connection values of `raw` (name, value pairs): hop-by-hop for this message only. */
export function connectionListed(raw: readonly string[]): Set<string> {
  const listed = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]?.toLowerCase() !== 'connection') continue;
    for (const name of (raw[i + 1] ?? '').split(',')) listed.add(name.trim().toLowerCase());
  }
  return listed;
}
