import {
  type AuthenticationResponseJSON,
  generateAuthenticationOptions,
  type PublicKeyCredentialRequestOptionsJSON,
} from '@simplewebauthn/server';
import type { Sql } from 'postgres';
import type { User } from '../accounts/users.ts';
import { getUser } from '../accounts/users.ts';
import { appendAuditEvent } from '../audit/append.ts';
import type { TenantSql } from '../db/tenant.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { type AssertionFailure, verifyAssertion } from './assertion.ts';
import { type CeremonyPurpose, issueChallenge, takeChallenge } from './challenges.ts';
import { ceremonyExpired } from './errors.ts';
import { CEREMONY_TIMEOUT_MS } from './registration.ts';
import type { RelyingParty } from './relying-party.ts';
import {
  credentialDescriptors,
  findUserCredential,
  recordPasskeyUse,
  type StoredPasskey,
  withCredential,
} from './store.ts';

// Signing in with a passkey (ACC-8), two ways:
// - passwordless, from /login: no username; the browser offers any of its
//   discoverable passkeys for this site, and the credential id it answers
//   with finds the account. User verification is required, so the passkey
//   is two factors in one (something held, and a PIN or biometric).
// - the second step after a password or provider: the options list the
//   account's own passkeys, and an answer from any other account's passkey
//   is refused.
// Either way the challenge is taken (deleted) before the answer is checked,
// so each works once, and a failed answer uses it up too.

export type PasswordlessOutcome =
  | { readonly ok: true; readonly user: User; readonly factorId: string }
  | { readonly ok: false };

/** A refused passwordless answer of a known passkey: ids and the reason only. */
function failedEvent(passkey: StoredPasskey, reason: AssertionFailure) {
  return {
    actor: 'anonymous',
    action: 'factor.failed',
    target: `user:${passkey.user_id}`,
    data: { user_id: passkey.user_id, kind: 'passkey', factor_id: passkey.factor_id, reason },
  };
}

/**
 * A good signature with a counter that did not advance: two authenticators
 * hold this credential (one cloned), or an answer was replayed. Recorded
 * apart from the failure so the owner can tell it from a mistyped PIN.
 */
function staleCounterEvent(passkey: StoredPasskey) {
  return {
    actor: 'anonymous',
    action: 'passkey.counter_stale',
    target: `user:${passkey.user_id}`,
    data: { user_id: passkey.user_id, factor_id: passkey.factor_id, sign_count: passkey.sign_count },
  };
}

export interface PasskeySignInDeps {
  readonly sql: Sql;
  readonly rp: RelyingParty;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
}

export function createPasskeySignIn(deps: PasskeySignInDeps) {
  const { sql, rp, rateLimits } = deps;

  const requestOptions = async (
    purpose: CeremonyPurpose,
    binding: string,
    allow: Awaited<ReturnType<typeof credentialDescriptors>> | undefined,
  ): Promise<PublicKeyCredentialRequestOptionsJSON> => {
    const challenge = await issueChallenge(sql, purpose, binding);
    return generateAuthenticationOptions({
      rpID: rp.id,
      challenge: new Uint8Array(Buffer.from(challenge, 'base64url')),
      timeout: CEREMONY_TIMEOUT_MS,
      userVerification: purpose === 'sign_in' ? 'required' : 'preferred',
      ...(allow === undefined
        ? {}
        : { allowCredentials: allow.map((c) => ({ id: c.credential_id, transports: c.transports })) }),
    });
  };

  return {
    /** Options for a passwordless sign-in; the challenge is bound to the browser's passkey cookie (`browserKey`). */
    signInOptions(browserKey: string): Promise<PublicKeyCredentialRequestOptionsJSON> {
      return requestOptions('sign_in', browserKey, undefined);
    },

    /**
     * Checks a passwordless answer. The credential id (attacker-controlled)
     * only finds a row; the signature, the user verification flag and the
     * counter decide. A refused answer of a known passkey is recorded as
     * factor.failed in its tenant's chain, and commits.
     */
    async signIn(browserKey: string, credential: AuthenticationResponseJSON): Promise<PasswordlessOutcome> {
      const challenge = await takeChallenge(sql, 'sign_in', browserKey);
      if (challenge === undefined) throw ceremonyExpired();
      return withCredential(sql, credential.id, async (tx, passkey): Promise<PasswordlessOutcome> => {
        if (passkey === undefined) return { ok: false };
        // ACC-5: per account, once the credential names one (the per-client bucket was spent before any lookup).
        await rateLimits.consume('passkey_account', passkey.user_id);
        const verdict = await verifyAssertion({
          rp,
          passkey,
          credential,
          challenge,
          requireUserVerification: true,
        });
        if (!verdict.ok) {
          await appendAuditEvent(tx, passkey.tenant_id, failedEvent(passkey, verdict.reason));
          if (verdict.reason === 'counter')
            await appendAuditEvent(tx, passkey.tenant_id, staleCounterEvent(passkey));
          return { ok: false };
        }
        const user = await getUser(tx, passkey.user_id);
        if (user === undefined) return { ok: false };
        await recordPasskeyUse(tx, passkey.factor_id, verdict);
        await appendAuditEvent(tx, passkey.tenant_id, {
          actor: `user:${user.id}`,
          action: 'factor.used',
          target: `user:${user.id}`,
          data: { user_id: user.id, kind: 'passkey', factor_id: passkey.factor_id },
        });
        return { ok: true, user, factorId: passkey.factor_id };
      });
    },

    /** Options for the second step of the sign-in challenge `signInChallengeId`, offering the user's passkeys. */
    async stepOptions(
      tx: TenantSql,
      userId: string,
      signInChallengeId: string,
    ): Promise<PublicKeyCredentialRequestOptionsJSON> {
      return requestOptions('second_step', signInChallengeId, await credentialDescriptors(tx, userId));
    },

    /**
     * The second step's check, in the sign-in's own transaction: the factor id
     * of the user's passkey that answered, or undefined. A passkey of another
     * account is not found under this user, and is refused like a bad signature.
     */
    async checkStep(
      tx: TenantSql,
      user: Pick<User, 'id' | 'tenant_id'>,
      signInChallengeId: string,
      credential: AuthenticationResponseJSON,
    ): Promise<string | undefined> {
      const challenge = await takeChallenge(tx, 'second_step', signInChallengeId);
      if (challenge === undefined) return undefined;
      const passkey = await findUserCredential(tx, user.id, credential.id);
      if (passkey === undefined) return undefined;
      const verdict = await verifyAssertion({
        rp,
        passkey,
        credential,
        challenge,
        requireUserVerification: false,
      });
      if (!verdict.ok) {
        // The sign-in records the failure itself (factor.failed); a stale counter is recorded too.
        if (verdict.reason === 'counter')
          await appendAuditEvent(tx, user.tenant_id, staleCounterEvent(passkey));
        return undefined;
      }
      await recordPasskeyUse(tx, passkey.factor_id, verdict);
      return passkey.factor_id;
    },
  };
}

export type PasskeySignIn = ReturnType<typeof createPasskeySignIn>;
