import type { FastifyReply, FastifyRequest } from 'fastify';
import { sendProblem } from '../http/problems.ts';
import { hashToken, tokenKind } from '../tokens.ts';

// The relay's own Bearer credentials (RLY-3, RLY-4): a relay token
// (enc_relay_…) starts and follows up threads, a thread token (enc_thread_…)
// reads, answers and closes one. Routes that take them are `auth: 'none'` to
// the session/API-token hook and check the header here, in their own
// onRequest hook, before any body is read. Every refusal is a 401 problem
// with WWW-Authenticate: Bearer (RFC 6750), never a lookup's error.

export type RelayBearerKind = 'relay' | 'thread';

/** The 401 code of a missing, malformed, unknown, revoked or expired token of each kind. */
export const INVALID_TOKEN_CODE = {
  relay: 'relay_token_invalid',
  thread: 'thread_token_invalid',
} as const satisfies Record<RelayBearerKind, string>;

type BearerProblem = (typeof INVALID_TOKEN_CODE)[RelayBearerKind] | 'token_wrong_kind';

export type BearerRead =
  | {
      readonly token: string /** SHA-256 hex: the rate-limit key, never the secret itself. */;
      readonly key: string;
    }
  | { readonly problem: BearerProblem; readonly presented: boolean };

/**
 * The token of `kind` from an Authorization header, or the problem to answer.
 * The header is attacker-controlled: it is matched against the token grammar
 * only (no lookup); a well-formed token of another kind (API, agent, the
 * other relay kind) is token_wrong_kind, anything else this kind's 401.
 */
export function readBearer(authorization: string | undefined, kind: RelayBearerKind): BearerRead {
  if (authorization === undefined) return { problem: INVALID_TOKEN_CODE[kind], presented: false };
  // HTTP auth schemes are case-insensitive (RFC 9110 §11.1), as in accounts/principal.ts.
  const match = /^Bearer ([\x21-\x7e]{1,200})$/i.exec(authorization);
  const token = match?.[1];
  if (token === undefined) return { problem: INVALID_TOKEN_CODE[kind], presented: true };
  const found = tokenKind(token);
  if (found === undefined) return { problem: INVALID_TOKEN_CODE[kind], presented: true };
  if (found !== kind) return { problem: 'token_wrong_kind', presented: true };
  return { token, key: hashToken(token).toString('hex') };
}

/** Answers a refused Bearer credential: 401 problem+json with its challenge. */
export function refuseBearer(
  request: FastifyRequest,
  reply: FastifyReply,
  problem: BearerProblem,
  presented: boolean,
): FastifyReply {
  // RFC 6750 §3: no error attribute when no credential came; invalid_token when one did.
  reply.header('www-authenticate', presented ? 'Bearer error="invalid_token"' : 'Bearer');
  return sendProblem(request, reply, problem);
}
