import type { FastifyReply } from 'fastify';
import { AccountsError } from '../accounts/errors.ts';
import type { Principal } from '../accounts/service.ts';
import { isAppError } from '../errors.ts';

// ACC-8: the changes that would let someone who found an open session keep
// the account (turning off a factor, changing the email, unlinking an
// identity, creating an API token) need the session's sign-in to have been
// passed in full within the last 10 minutes. An API token is not a session
// left open in a browser: it is a credential its owner minted from a recent
// sign-in and can revoke, so the rule does not apply to it (the factor and
// identity pages take sessions only).

export const RECENT_SIGN_IN_MINUTES = 10;

export function signedInRecently(principal: Principal, now = Date.now()): boolean {
  if (principal.via === 'token') return true;
  return (
    principal.authenticatedAt !== undefined &&
    now - principal.authenticatedAt.getTime() <= RECENT_SIGN_IN_MINUTES * 60_000
  );
}

export function assertRecentSignIn(principal: Principal): void {
  if (signedInRecently(principal)) return;
  throw new AccountsError(
    'reauth_required',
    `This needs a sign-in within the last ${RECENT_SIGN_IN_MINUTES} minutes. Sign in again, then retry.`,
  );
}

export function needsReauth(error: unknown): boolean {
  return isAppError(error) && error.code === 'reauth_required';
}

/** A page's answer to reauth_required: sign in again, then come back to `path`. */
export function reauthRedirect(reply: FastifyReply, path: string): FastifyReply {
  return reply.redirect(`/login?reauth=1&next=${encodeURIComponent(path)}`, 303);
}
