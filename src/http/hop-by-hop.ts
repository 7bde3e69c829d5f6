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

const NONE: ReadonlySet<string> = new Set();
/** The sets for the Connection value nearly every message carries, shared. */
const COMMON = new Map<string, ReadonlySet<string>>([
  ['keep-alive', new Set(['keep-alive'])],
  ['close', new Set(['close'])],
]);

/** Header names listed in Connection values of `raw` (name, value pairs): hop-by-hop for this message only. */
export function connectionListed(raw: readonly string[]): ReadonlySet<string> {
  const values: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] ?? '';
    // By length first: most names are not it, and need no lowercasing to tell.
    if (name.length === 10 && name.toLowerCase() === 'connection') values.push(raw[i + 1] ?? '');
  }
  if (values.length === 0) return NONE;
  const common = values.length === 1 ? COMMON.get((values[0] ?? '').toLowerCase()) : undefined;
  if (common !== undefined) return common;
  const listed = new Set<string>();
  for (const value of values) for (const name of value.split(',')) listed.add(name.trim().toLowerCase());
  return listed;
}
