import { createHash, createPublicKey, type KeyObject, sign } from 'node:crypto';
import { canonicalJson } from '../audit/jcs.ts';
import type { AgentCardSignatureJson, SignedAgentCard, UnsignedAgentCard } from './cards.ts';

// RLY-13: every served card is signed as A2A §8.4 says. The payload is the
// RFC 8785 canonical form of the card without `signatures`; the signature is
// a JWS (RFC 7515) with alg EdDSA and the key's id in its protected header,
// and the payload is detached: a verifier canonicalizes the card it read and
// puts it back between the dots. The public key is published as a JWK Set
// (/.well-known/jwks.json) whose kid is the RFC 7638 thumbprint of the key.

/** The public half of an Ed25519 key as a JWK (RFC 8037). */
export interface Ed25519PublicJwk {
  readonly kty: 'OKP';
  readonly crv: 'Ed25519';
  readonly x: string;
  readonly kid: string;
  readonly alg: 'EdDSA';
  readonly use: 'sig';
}

export interface CardSigner {
  /** The key's RFC 7638 thumbprint, the `kid` of every signature. */
  readonly kid: string;
  /** The JWK Set served at /.well-known/jwks.json. */
  readonly jwks: { readonly keys: Ed25519PublicJwk[] };
  /** The card with its one signature. */
  sign(card: UnsignedAgentCard): SignedAgentCard;
}

export const JWKS_PATH = '/.well-known/jwks.json';

const base64url = (bytes: Buffer | string): string => Buffer.from(bytes).toString('base64url');

/** RFC 7638: SHA-256 over the required members of the JWK, in lexicographic order, without whitespace. */
function thumbprint(x: string): string {
  return base64url(createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest());
}

/** The bytes a card's signature covers: RFC 8785 text of the card without its signatures. */
export function cardSigningPayload(card: UnsignedAgentCard): string {
  const { signatures: _ignored, ...unsigned } = card as UnsignedAgentCard & { signatures?: unknown };
  return canonicalJson(unsigned);
}

export function createCardSigner(privateKey: KeyObject, publicUrl: string): CardSigner {
  const exported = createPublicKey(privateKey).export({ format: 'jwk' });
  if (exported.kty !== 'OKP' || exported.crv !== 'Ed25519' || exported.x === undefined) {
    throw new Error('the relay signing key is not an Ed25519 key');
  }
  const kid = thumbprint(exported.x);
  const jwk: Ed25519PublicJwk = { kty: 'OKP', crv: 'Ed25519', x: exported.x, kid, alg: 'EdDSA', use: 'sig' };
  // typ and jku as A2A's example has them: a verifier finds the key set from the card alone.
  const header = base64url(
    JSON.stringify({ alg: 'EdDSA', kid, typ: 'JOSE', jku: `${publicUrl}${JWKS_PATH}` }),
  );
  return {
    kid,
    jwks: { keys: [jwk] },
    sign(card) {
      const input = `${header}.${base64url(cardSigningPayload(card))}`;
      const signature: AgentCardSignatureJson = {
        protected: header,
        signature: base64url(sign(null, Buffer.from(input), privateKey)),
      };
      return { ...card, signatures: [signature] };
    },
  };
}
