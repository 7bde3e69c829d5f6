import { createHash, randomInt } from 'node:crypto';
import type { TenantSql } from '../db/tenant.ts';

// Recovery codes (ACC-8): ten per user, shown once, each good for one
// sign-in in place of a second factor. Only their hashes are stored.
//
// A plain SHA-256 is enough here, where a password needs scrypt: each code
// is 16 characters drawn at random from 32, i.e. 80 bits, chosen by us and
// not by a person. Guessing one from its hash takes ~2^79 hashes on average,
// out of reach of any offline search, so a slow hash would add cost to
// every sign-in and nothing against an attacker.

export const RECOVERY_CODE_COUNT = 10;
// Lowercase letters and digits without 0/o, 1/l/i: nothing to misread on paper.
const ALPHABET = 'abcdefghjkmnpqrstuvwxyz23456789';
const GROUPS = 4;
const GROUP_LENGTH = 4;
const CODE_LENGTH = GROUPS * GROUP_LENGTH;

/** Ten fresh codes, each as `xxxx-xxxx-xxxx-xxxx`. */
export function newRecoveryCodes(): string[] {
  return Array.from({ length: RECOVERY_CODE_COUNT }, () => {
    const characters = Array.from({ length: CODE_LENGTH }, () => ALPHABET[randomInt(ALPHABET.length)]);
    const groups = Array.from({ length: GROUPS }, (_, i) =>
      characters.slice(i * GROUP_LENGTH, (i + 1) * GROUP_LENGTH).join(''),
    );
    return groups.join('-');
  });
}

/**
 * A typed code in the form it is hashed in (lowercase, no dashes or spaces);
 * undefined unless it could be one of ours. Attacker-controlled: only the
 * alphabet's 16 characters pass, so nothing else reaches the hash or the query.
 */
export function recoveryCodeOf(input: string): string | undefined {
  if (input.length > 64) return undefined;
  const code = input.toLowerCase().replace(/[-\s]/g, '');
  return code.length === CODE_LENGTH && [...code].every((ch) => ALPHABET.includes(ch)) ? code : undefined;
}

export function recoveryCodeHash(code: string): string {
  return createHash('sha256').update(`enclave recovery code\0${code}`).digest('hex');
}

/** Replaces the user's codes with `codes` (the old ones stop working); returns how many were revoked. */
export async function replaceRecoveryCodes(
  tx: TenantSql,
  user: { id: string; tenant_id: string },
  codes: readonly string[],
): Promise<number> {
  const revoked = await deleteRecoveryCodes(tx, user.id);
  const hashes = codes.map((code) => recoveryCodeHash(recoveryCodeOf(code) ?? ''));
  await tx`
    insert into recovery_codes (tenant_id, user_id, code_hash)
    select ${user.tenant_id}::uuid, ${user.id}::uuid, unnest(${hashes}::text[])`;
  return revoked;
}

export async function deleteRecoveryCodes(tx: TenantSql, userId: string): Promise<number> {
  const deleted = await tx`delete from recovery_codes where user_id = ${userId}::uuid returning 1`;
  return deleted.length;
}

/** Spends one unused code of the user: its id, or undefined if `code` is none of them. */
export async function spendRecoveryCode(
  tx: TenantSql,
  userId: string,
  code: string,
): Promise<string | undefined> {
  const [spent] = await tx<{ id: string }[]>`
    update recovery_codes set used_at = now()
    where user_id = ${userId}::uuid and code_hash = ${recoveryCodeHash(code)} and used_at is null
    returning id`;
  return spent?.id;
}

export async function unusedRecoveryCodes(tx: TenantSql, userId: string): Promise<number> {
  const [row] = await tx<{ count: number }[]>`
    select count(*)::int as count from recovery_codes where user_id = ${userId}::uuid and used_at is null`;
  return row?.count ?? 0;
}
