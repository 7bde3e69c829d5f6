import { type AuthenticationResponseJSON, verifyAuthenticationResponse } from '@simplewebauthn/server';
import { counterIsStale } from './counter.ts';
import { userHandle } from './registration.ts';
import type { RelyingParty } from './relying-party.ts';
import type { StoredPasskey } from './store.ts';

// One assertion (navigator.credentials.get) checked against one stored
// passkey, in order: the user handle the authenticator returned names the
// passkey's own account; the signature verifies under the stored public key
// over this challenge, origin and RP ID, with the flags asked for; the
// signature counter advanced. Every input is attacker-controlled except the
// stored passkey and the challenge taken from the database.

export type AssertionFailure = 'user_handle' | 'signature' | 'counter';

export type AssertionVerdict =
  | { readonly ok: true; readonly signCount: number; readonly backedUp: boolean }
  | { readonly ok: false; readonly reason: AssertionFailure; readonly cause?: unknown };

export async function verifyAssertion(input: {
  rp: RelyingParty;
  passkey: StoredPasskey;
  credential: AuthenticationResponseJSON;
  challenge: string;
  /** A passwordless sign-in needs the authenticator to have verified the user (two factors in one). */
  requireUserVerification: boolean;
}): Promise<AssertionVerdict> {
  const { rp, passkey, credential } = input;
  const handle = credential.response.userHandle;
  if (handle !== undefined && handle !== Buffer.from(userHandle(passkey.user_id)).toString('base64url')) {
    return { ok: false, reason: 'user_handle' };
  }
  let verification: Awaited<ReturnType<typeof verifyAuthenticationResponse>>;
  try {
    verification = await verifyAuthenticationResponse({
      response: credential,
      expectedChallenge: input.challenge,
      expectedOrigin: rp.origin,
      expectedRPID: rp.id,
      // Counter 0: the library's own counter check is skipped, so a stale counter is told apart below.
      credential: {
        id: passkey.credential_id,
        publicKey: new Uint8Array(passkey.public_key),
        counter: 0,
        transports: passkey.transports,
      },
      requireUserVerification: input.requireUserVerification,
    });
  } catch (cause) {
    return { ok: false, reason: 'signature', cause };
  }
  if (!verification.verified) return { ok: false, reason: 'signature' };
  const { newCounter, credentialBackedUp } = verification.authenticationInfo;
  if (counterIsStale(passkey.sign_count, newCounter)) return { ok: false, reason: 'counter' };
  return { ok: true, signCount: newCounter, backedUp: credentialBackedUp };
}
