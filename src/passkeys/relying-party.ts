import type { Config } from '../config.ts';

// The relying party a passkey is bound to: the host of the app's public URL
// (its RP ID) and that URL's origin. Browsers refuse an RP ID that is not
// the page's host or a parent of it, and accept http only on localhost.

export interface RelyingParty {
  /** The RP ID: the public URL's host name, without port. */
  readonly id: string;
  /** The only origin a ceremony may come from. */
  readonly origin: string;
  /** What authenticators show the user. */
  readonly name: string;
}

export function relyingPartyOf(config: Pick<Config, 'publicUrl'>): RelyingParty {
  const url = new URL(config.publicUrl);
  return { id: url.hostname, origin: url.origin, name: 'Enclave' };
}
