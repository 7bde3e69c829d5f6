import { createHash, randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import type { TenantSql } from '../db/tenant.ts';

// The challenge of one WebAuthn ceremony, kept server-side (passkey_challenges)
// and bound to what started it: a session adding a passkey ('register'), the
// browser cookie of a passwordless sign-in ('sign_in'), or a sign-in
// challenge waiting for its second step ('second_step'). Only a hash of the
// binding is stored. A new challenge for a binding replaces the old one;
// taking it deletes it, so it is used once, and it expires after 5 minutes.

export type CeremonyPurpose = 'register' | 'sign_in' | 'second_step';

export const CHALLENGE_SECONDS = 5 * 60;

function bindingHash(purpose: CeremonyPurpose, binding: string): string {
  return createHash('sha256').update(`${purpose}\n${binding}`, 'utf8').digest('hex');
}

/** A fresh challenge (32 random bytes, base64url) stored for `binding`, replacing any earlier one. */
export async function issueChallenge(
  sql: Sql | TenantSql,
  purpose: CeremonyPurpose,
  binding: string,
): Promise<string> {
  const challenge = randomBytes(32).toString('base64url');
  await sql`
    insert into passkey_challenges (purpose, binding_hash, challenge, expires_at)
    values (${purpose}, ${bindingHash(purpose, binding)}, ${challenge},
            now() + make_interval(secs => ${CHALLENGE_SECONDS}))
    on conflict (purpose, binding_hash)
      do update set challenge = excluded.challenge, expires_at = excluded.expires_at`;
  return challenge;
}

/**
 * Takes (deletes) the challenge stored for `binding` and returns it if it had
 * not expired. `binding` may come from a cookie (attacker-controlled): it is
 * only ever hashed and compared.
 */
export async function takeChallenge(
  sql: Sql | TenantSql,
  purpose: CeremonyPurpose,
  binding: string,
): Promise<string | undefined> {
  const [row] = await sql<{ challenge: string; live: boolean }[]>`
    delete from passkey_challenges
    where purpose = ${purpose} and binding_hash = ${bindingHash(purpose, binding)}
    returning challenge, expires_at > now() as live`;
  return row?.live === true ? row.challenge : undefined;
}
