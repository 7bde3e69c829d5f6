import { type KeyObject, sign } from 'node:crypto';

// /security.json is signed as a JWS (RFC 7515) with its payload detached
// (RFC 7515 appendix F): `<protected header>..<signature>`, where the
// signature covers `<protected header>.<base64url(body)>`. A verifier puts
// base64url of the bytes it fetched between the dots and checks the result
// with the key of `kid` from /.well-known/jwks.json: the operator's Ed25519
// key that also signs the agent cards (RLY-13).

const base64url = (bytes: Buffer | string): string => Buffer.from(bytes).toString('base64url');

export interface DetachedSigner {
  readonly kid: string;
  /** The compact JWS of `payload` with the payload part left empty. */
  sign(payload: Buffer): string;
}

export function createDetachedSigner(privateKey: KeyObject, kid: string): DetachedSigner {
  const header = base64url(JSON.stringify({ alg: 'EdDSA', kid, cty: 'application/json' }));
  return {
    kid,
    sign(payload) {
      const input = Buffer.from(`${header}.${base64url(payload)}`);
      return `${header}..${base64url(sign(null, input, privateKey))}`;
    },
  };
}
