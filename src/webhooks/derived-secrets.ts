import { createHmac } from 'node:crypto';
import { SIGNING_KEY_PREFIX } from './signature.ts';

// Webhook secrets that are never stored (inbound endpoints, callback
// endpoints): each is HMAC-SHA256 of the endpoint's id and its random salt
// under a key derived from the server's session key and a label naming what
// the secret is for, so one label's secrets say nothing of another's. Only
// the salt is in the database: a copy of it alone signs nothing. Replacing
// the session key changes every derived secret (README).

export interface SecretDeriver {
  /** The endpoint's `whsec_` secret (HMAC, Standard Webhooks v1). */
  secret(endpointId: string, salt: Buffer): string;
  /** The endpoint's `whsk_` Ed25519 signing key (v1a), from the same id and salt. */
  signingKey(endpointId: string, salt: Buffer): string;
}

export function createSecretDeriver(sessionKey: string, label: string): SecretDeriver {
  const key = createHmac('sha256', sessionKey).update(label).digest();
  const derive = (purpose: string, endpointId: string, salt: Buffer) =>
    createHmac('sha256', key).update(purpose).update(endpointId).update(salt).digest('base64');
  return {
    secret: (endpointId, salt) => `whsec_${derive('', endpointId, salt)}`,
    signingKey: (endpointId, salt) => `${SIGNING_KEY_PREFIX}${derive('v1a', endpointId, salt)}`,
  };
}
