import type { RateLimits } from '../http/rate-limits.ts';

// RLY-5 for the relay's data plane: each action spends a point of its own
// bucket for the credential it came with (relay token, thread token or user)
// and one for the client address, before any lookup, in the limiter every
// server process shares. Past either, RateLimitedError: 429 with Retry-After.
// Tokens are keyed by their hash, never by the secret itself.

export type RelayAction = 'thread_start' | 'follow_up' | 'read' | 'token_mint';

const BUCKETS = {
  thread_start: ['relay_thread_start_token', 'relay_thread_start_ip'],
  follow_up: ['relay_follow_up_token', 'relay_follow_up_ip'],
  read: ['relay_read_token', 'relay_read_ip'],
  token_mint: ['relay_token_mint_user', 'relay_token_mint_ip'],
} as const;

/**
 * Spends `action`'s points: `credential` is the token's SHA-256 (hex) or the
 * user id for a mint; `clientAddress` the request's client address.
 */
export async function spendRelayPoints(
  rateLimits: Pick<RateLimits, 'consume'>,
  action: RelayAction,
  credential: string,
  clientAddress: string,
): Promise<void> {
  const [byCredential, byAddress] = BUCKETS[action];
  await rateLimits.consume(byCredential, credential);
  await rateLimits.consume(byAddress, clientAddress);
}
