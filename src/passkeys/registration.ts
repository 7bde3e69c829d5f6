import {
  generateRegistrationOptions,
  type PublicKeyCredentialCreationOptionsJSON,
  type RegistrationResponseJSON,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import type { Sql } from 'postgres';
import { recordFor } from '../accounts/audit-events.ts';
import type { Principal } from '../accounts/service.ts';
import { withTenant } from '../db/tenant.ts';
import { lockSignInWays } from '../signin/sign-in-ways.ts';
import { issueChallenge, takeChallenge } from './challenges.ts';
import { ceremonyExpired, PasskeyError } from './errors.ts';
import type { RelyingParty } from './relying-party.ts';
import { knownTransports } from './schemas.ts';
import { credentialDescriptors, insertPasskey } from './store.ts';

// Adding a passkey from /profile (ACC-8): options with a challenge bound to
// the session, then the browser's attestation checked against that challenge,
// this origin and RP ID. Passkeys are discoverable (resident) credentials
// with user verification, so each can also sign in alone. Attestation is not
// asked for ('none'): any authenticator the user trusts may hold a passkey.

export const CEREMONY_TIMEOUT_MS = 2 * 60 * 1000;
/** COSE algorithms accepted: EdDSA, ES256, RS256 (the library would add ML-DSA-44 where Node has it, still experimental). */
const ALGORITHMS = [-8, -7, -257];

/** The WebAuthn user handle: the account id's 16 bytes, stable across the user's passkeys, and no personal data. */
export function userHandle(userId: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(Buffer.from(userId.replaceAll('-', ''), 'hex'));
}

/** Postgres's unique violation on the platform-wide credential id. */
function isDuplicateCredential(error: unknown): boolean {
  const { code, constraint_name: constraint } = (error ?? {}) as {
    code?: unknown;
    constraint_name?: unknown;
  };
  return code === '23505' && constraint === 'passkey_credentials_credential_id_key';
}

/** Passkeys one account may hold: each is a row its own lists, options and sign-ins carry. */
export const MAX_PASSKEYS = 20;

function tooMany(): PasskeyError {
  return new PasskeyError(
    'passkey_limit',
    `An account holds at most ${MAX_PASSKEYS} passkeys. Remove one you no longer use, then add this one.`,
  );
}

export interface PasskeyRegistrationDeps {
  readonly sql: Sql;
  readonly rp: RelyingParty;
}

export function createPasskeyRegistration(deps: PasskeyRegistrationDeps) {
  const { sql, rp } = deps;
  return {
    /** Options for navigator.credentials.create(); its challenge replaces any earlier one of this session. */
    async options(principal: Principal, sessionId: string): Promise<PublicKeyCredentialCreationOptionsJSON> {
      const { user } = principal;
      const existing = await withTenant(sql, user.tenant_id, (tx) => credentialDescriptors(tx, user.id));
      if (existing.length >= MAX_PASSKEYS) throw tooMany();
      const challenge = await issueChallenge(sql, 'register', sessionId);
      return generateRegistrationOptions({
        rpName: rp.name,
        rpID: rp.id,
        userName: user.username,
        userDisplayName: user.username,
        userID: userHandle(user.id),
        challenge: new Uint8Array(Buffer.from(challenge, 'base64url')),
        timeout: CEREMONY_TIMEOUT_MS,
        attestationType: 'none',
        // The same authenticator is not registered twice.
        excludeCredentials: existing.map((credential) => ({
          id: credential.credential_id,
          transports: credential.transports,
        })),
        authenticatorSelection: { residentKey: 'required', userVerification: 'required' },
        supportedAlgorithmIDs: ALGORITHMS,
      });
    },

    /**
     * Verifies the browser's attestation against the session's challenge and
     * stores the passkey under `name`; returns its factor id. The challenge is
     * taken (deleted) first, in its own statement, so a failed attempt uses it up too.
     */
    async register(
      principal: Principal,
      sessionId: string,
      input: { name: string; credential: RegistrationResponseJSON },
    ): Promise<string> {
      const challenge = await takeChallenge(sql, 'register', sessionId);
      if (challenge === undefined) throw ceremonyExpired();
      // The whole credential is attacker-controlled; the library checks the challenge, origin, RP ID and flags.
      const rejected = (cause?: unknown) =>
        new PasskeyError('passkey_rejected', 'The passkey could not be verified. Try again.', { cause });
      const verification = await verifyRegistrationResponse({
        response: input.credential,
        expectedChallenge: challenge,
        expectedOrigin: rp.origin,
        expectedRPID: rp.id,
        requireUserVerification: true,
        supportedAlgorithmIDs: ALGORITHMS,
      }).catch((cause: unknown) => {
        throw rejected(cause);
      });
      if (!verification.verified) throw rejected();
      const info = verification.registrationInfo;
      const { user } = principal;
      try {
        return await withTenant(sql, user.tenant_id, async (tx) => {
          // Counted with the user's row locked, so two ceremonies finishing at once cannot both pass.
          if ((await lockSignInWays(tx, user.id)).passkeys >= MAX_PASSKEYS) throw tooMany();
          const factorId = await insertPasskey(tx, {
            tenantId: user.tenant_id,
            userId: user.id,
            name: input.name,
            credentialId: info.credential.id,
            publicKey: info.credential.publicKey,
            signCount: info.credential.counter,
            transports: knownTransports(info.credential.transports),
            backupEligible: info.credentialDeviceType === 'multiDevice',
            backedUp: info.credentialBackedUp,
          });
          await recordFor(tx, principal, {
            action: 'factor.enrolled',
            target: `user:${user.id}`,
            data: { factor_id: factorId, kind: 'passkey' },
          });
          return factorId;
        });
      } catch (error) {
        if (isDuplicateCredential(error)) {
          throw new PasskeyError('passkey_exists', 'This passkey is already registered.');
        }
        throw error;
      }
    },
  };
}

export type PasskeyRegistration = ReturnType<typeof createPasskeyRegistration>;
