// The signature counter rule (WebAuthn §6.1.1): an authenticator that keeps
// a counter raises it on every assertion, so an assertion whose counter is
// not above the stored one comes from a copy of the credential (a cloned
// authenticator) or is a replay. Where both are 0 the authenticator keeps
// no counter, and there is nothing to compare.

/** True when `presented` (attacker-influenced: it is in the authenticator data) fails to advance `stored`. */
export function counterIsStale(stored: number, presented: number): boolean {
  return (stored > 0 || presented > 0) && presented <= stored;
}
