import {
  destinationVerdict,
  type IpAddress,
  type IpRange,
  parseAllowRanges,
  parseIp,
} from '../agents/egress/destinations.ts';
import { createHostAddressReader } from '../agents/egress/host-addresses.ts';
import { createCaresLookup, type LookupFn } from '../agents/egress/resolver.ts';
import type { Config } from '../config.ts';
import { AppError } from '../errors.ts';

// Where a callback may be sent (RLY-12). A callback URL comes from a relay
// caller or an agent owner, and the platform itself POSTs to it: aimed at the
// host's loopback, a private network or a cloud metadata address it would be
// a request forgery from inside. So it is checked twice with the egress
// proxy's own address rules (destinations.ts, host-addresses.ts, resolver.ts,
// reused as they are): when it is registered (checkCallbackUrl), and on every
// attempt after resolving its name (send.ts), which then connects to the
// address it checked.
//
// The operator's exceptions are ENCLAVE_CALLBACK_ALLOW, not the egress
// proxy's ENCLAVE_EGRESS_ALLOW: a range opened to agents' sandboxed code (an
// internal API they call) is not one that every relay caller of every tenant
// should be able to aim the platform's own POSTs at, and the reverse.

export const MAX_CALLBACK_URL_LENGTH = 2000;
/** A name not resolved within this long fails the registration check (the attempt has its own timeout). */
export const CALLBACK_DNS_TIMEOUT_MS = 5_000;

export type CallbackUrlErrorCode =
  | 'callback_url_invalid'
  | 'callback_url_too_long'
  | 'callback_url_credentials'
  | 'callback_url_scheme'
  | 'callback_url_unresolvable'
  | 'callback_destination_forbidden';

export class CallbackUrlError extends AppError<CallbackUrlErrorCode> {
  constructor(code: CallbackUrlErrorCode, message: string, field: string) {
    super(code, message, { field });
    this.name = 'CallbackUrlError';
  }
}

export interface CallbackRules {
  /** Production sends to https only; development also to http. */
  readonly production: boolean;
  /** The operator's ranges (ENCLAVE_CALLBACK_ALLOW), parsed. */
  readonly allow: readonly IpRange[];
  /** The ranges the host answers on now: refused as the host's own, as for egress. */
  readonly hostRanges: () => readonly IpRange[];
  readonly lookup: LookupFn;
}

export function createCallbackRules(
  config: Pick<Config, 'env' | 'callbackAllow'>,
  /** Resolves names instead of c-ares: a fake DNS answer, for tests. */
  lookup?: LookupFn,
): CallbackRules {
  return Object.freeze({
    production: config.env === 'production',
    allow: parseAllowRanges(config.callbackAllow),
    hostRanges: createHostAddressReader(),
    lookup: lookup ?? createCaresLookup({ timeoutMs: CALLBACK_DNS_TIMEOUT_MS }),
  });
}

/** A callback URL that passed the shape checks: what to resolve, where to connect, what to send as Host. */
export interface CallbackTarget {
  readonly url: URL;
  /** Lowercase name without brackets or trailing dot, or an IP literal. */
  readonly hostname: string;
  /** Set when the URL names an IP literal: checked as is, never resolved. */
  readonly ip: IpAddress | undefined;
  readonly port: number;
}

/** The shape checks, without DNS: a URL, not too long, no credentials, an allowed scheme. */
export function parseCallbackUrl(
  text: string,
  rules: Pick<CallbackRules, 'production'>,
  field = 'url',
): CallbackTarget {
  // text is the caller's: its length is checked before the URL parser spends any work on it.
  if (text.length > MAX_CALLBACK_URL_LENGTH) {
    throw new CallbackUrlError(
      'callback_url_too_long',
      `must be at most ${MAX_CALLBACK_URL_LENGTH} characters`,
      field,
    );
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CallbackUrlError('callback_url_invalid', 'is not an absolute URL', field);
  }
  const schemes = rules.production ? ['https:'] : ['https:', 'http:'];
  if (!schemes.includes(url.protocol)) {
    throw new CallbackUrlError(
      'callback_url_scheme',
      rules.production ? 'must use https' : 'must use https or http',
      field,
    );
  }
  // Credentials in a URL end up in logs and delivery records; the receiver authenticates by signature.
  if (url.username !== '' || url.password !== '') {
    throw new CallbackUrlError('callback_url_credentials', 'must not carry a user name or password', field);
  }
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname.replace(/\.$/, '');
  if (hostname === '') throw new CallbackUrlError('callback_url_invalid', 'has no host', field);
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  return { url, hostname, ip: parseIp(hostname), port };
}

export type DestinationCheck =
  | { readonly ok: true; readonly addresses: readonly string[] }
  | { readonly ok: false; readonly code: 'dns' | 'forbidden_destination'; readonly reason: string };

/**
 * The addresses a target may be reached at now: its IP literal, or every
 * address its name resolves to, each allowed by destinationVerdict; one
 * refused address refuses them all (an attacker's DNS may mix a public
 * address in with the one it aims at).
 */
export async function resolveCallbackDestination(
  target: CallbackTarget,
  rules: Pick<CallbackRules, 'allow' | 'hostRanges' | 'lookup'>,
): Promise<DestinationCheck> {
  let addresses: readonly string[];
  if (target.ip !== undefined) {
    addresses = [target.hostname];
  } else {
    try {
      // The name's owner may control its DNS answers: each is checked below, then connected to as is.
      addresses = (await rules.lookup(target.hostname)).map((entry) => entry.address);
    } catch (error) {
      const code = String((error as { code?: unknown } | undefined)?.code ?? 'error');
      return { ok: false, code: 'dns', reason: `DNS lookup failed (${code.slice(0, 40)})` };
    }
    if (addresses.length === 0) return { ok: false, code: 'dns', reason: 'DNS lookup found no address' };
  }
  const own = rules.hostRanges();
  for (const address of addresses) {
    const verdict = destinationVerdict(address, rules.allow, own);
    if (!verdict.allowed) {
      const reason = target.ip === undefined ? `resolves to a ${verdict.reason}` : verdict.reason;
      return { ok: false, code: 'forbidden_destination', reason };
    }
  }
  return { ok: true, addresses };
}

/**
 * The registration-time check of a callback URL: its shape, then its
 * destination as DNS answers now. Throws CallbackUrlError naming `field`.
 */
export async function checkCallbackUrl(
  text: string,
  rules: CallbackRules,
  field = 'url',
): Promise<CallbackTarget> {
  const target = parseCallbackUrl(text, rules, field);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<DestinationCheck>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, code: 'dns', reason: 'DNS lookup timed out' }),
      CALLBACK_DNS_TIMEOUT_MS,
    );
  });
  const check = await Promise.race([resolveCallbackDestination(target, rules), timedOut]).finally(() =>
    clearTimeout(timer),
  );
  if (check.ok) return target;
  if (check.code === 'dns') {
    throw new CallbackUrlError('callback_url_unresolvable', 'its host name does not resolve', field);
  }
  throw new CallbackUrlError(
    'callback_destination_forbidden',
    // The resolved address stays out of the message: internal DNS answers are not the registrant's to learn.
    'points at an address that is not public (loopback, private, link-local, shared, multicast, unspecified, cloud metadata or the host itself) and the operator has not allowed its range',
    field,
  );
}
