import { randomUUID } from 'node:crypto';
import type { TenantSql } from '../db/tenant.ts';
import type { StoredUnderDataKey, TotpSecretAddress, Vault } from '../vault/service.ts';
import { acceptedStep, newTotpSecret, otpauthUri } from './totp.ts';

// The rows of totp_secrets (migration 0027): a pending enrolment (no factor
// yet, expiring) and, once its first code is accepted, the factor's secret
// with the last step used. The secret goes in and out only through the
// vault (sealTotpSecret / lendTotpSecret), never in a form or a log.

type TotpVault = Pick<Vault, 'sealTotpSecret' | 'lendTotpSecret'>;
interface UserRef {
  readonly id: string;
  readonly tenant_id: string;
}

/** How long a started enrolment waits for its first code. */
const ENROLMENT_MINUTES = 30;
export const TOTP_FACTOR_NAME = 'Authenticator app';

interface StoredSecretRow extends StoredUnderDataKey {
  readonly id: string;
  readonly last_used_step: string | null;
}

const address = (user: UserRef, id: string): TotpSecretAddress => ({
  tenantId: user.tenant_id,
  userId: user.id,
  factorId: id,
});

/** The user's TOTP factor id, if enrolled. */
export async function totpFactorId(tx: TenantSql, userId: string): Promise<string | undefined> {
  const [row] = await tx<{ id: string }[]>`
    select id from user_factors where user_id = ${userId}::uuid and kind = 'totp'`;
  return row?.id;
}

/** Starts (or starts again) an enrolment: a fresh secret, sealed, replacing any pending one. */
export async function startEnrolment(tx: TenantSql, vault: TotpVault, user: UserRef): Promise<void> {
  await tx`delete from totp_secrets where user_id = ${user.id}::uuid and factor_id is null`;
  const id = randomUUID();
  const secret = newTotpSecret();
  try {
    const sealed = await vault.sealTotpSecret(tx, address(user, id), secret);
    await tx`
      insert into totp_secrets (id, tenant_id, user_id, key_version, ciphertext, nonce, tag, expires_at)
      values (${id}::uuid, ${user.tenant_id}::uuid, ${user.id}::uuid, ${sealed.key_version},
              ${sealed.ciphertext}, ${sealed.nonce}, ${sealed.tag},
              now() + make_interval(mins => ${ENROLMENT_MINUTES}))`;
  } finally {
    secret.fill(0);
  }
}

/** The pending enrolment's otpauth:// URI (its secret inside), or undefined when none is waiting. */
export async function pendingEnrolmentUri(
  tx: TenantSql,
  vault: TotpVault,
  user: UserRef & { username: string },
): Promise<string | undefined> {
  const row = await secretRow(tx, user.id, 'pending');
  if (row === undefined) return undefined;
  return vault.lendTotpSecret(address(user, row.id), row, (secret) => otpauthUri(user.username, secret));
}

/**
 * Confirms the pending enrolment with its first code: the factor row is made
 * with the enrolment's id, and the code's step counts as used. Returns the
 * factor id, or undefined when no enrolment waits or the code is wrong.
 */
export async function confirmEnrolment(
  tx: TenantSql,
  vault: TotpVault,
  user: UserRef,
  code: string,
  nowMs: number,
): Promise<string | undefined> {
  const found = await acceptedCode(tx, vault, user, 'pending', { code, nowMs });
  if (found === undefined) return undefined;
  await tx`
    insert into user_factors (id, tenant_id, user_id, kind, name)
    values (${found.id}::uuid, ${user.tenant_id}::uuid, ${user.id}::uuid, 'totp', ${TOTP_FACTOR_NAME})`;
  await tx`
    update totp_secrets set factor_id = id, expires_at = null, last_used_step = ${found.step}::bigint
    where id = ${found.id}::uuid`;
  return found.id;
}

/**
 * Checks a code against the user's TOTP factor and, if it is accepted,
 * records its step as used. Returns the factor id, or undefined.
 */
export async function useTotpCode(
  tx: TenantSql,
  vault: TotpVault,
  user: UserRef,
  code: string,
  nowMs: number,
): Promise<string | undefined> {
  const found = await acceptedCode(tx, vault, user, 'enrolled', { code, nowMs });
  if (found === undefined) return undefined;
  // The factor's last_used_at is set by the sign-in core with the step it passes (second-step.ts).
  await tx`update totp_secrets set last_used_step = ${found.step}::bigint where id = ${found.id}::uuid`;
  return found.id;
}

/** The row (locked) and the step `code` is accepted for, after the row's last used step; undefined if none. */
async function acceptedCode(
  tx: TenantSql,
  vault: TotpVault,
  user: UserRef,
  which: 'pending' | 'enrolled',
  attempt: { code: string; nowMs: number },
): Promise<{ id: string; step: string } | undefined> {
  const row = await secretRow(tx, user.id, which);
  if (row === undefined) return undefined;
  const last = row.last_used_step === null ? null : BigInt(row.last_used_step);
  const step = await vault.lendTotpSecret(address(user, row.id), row, (secret) =>
    acceptedStep(secret, attempt.code, attempt.nowMs, last),
  );
  return step === undefined ? undefined : { id: row.id, step: step.toString() };
}

/**
 * The user's pending enrolment or enrolled secret, with its data key (one
 * statement, one snapshot), locked to the end of the transaction: two
 * requests with one code are ordered, and the second finds its step used.
 */
async function secretRow(
  tx: TenantSql,
  userId: string,
  which: 'pending' | 'enrolled',
): Promise<StoredSecretRow | undefined> {
  const [row] = await tx<StoredSecretRow[]>`
    select t.id, t.key_version, t.ciphertext, t.nonce, t.tag, t.last_used_step::text as last_used_step,
           k.master_version, k.wrapped
    from totp_secrets t
    join vault_data_keys k on k.tenant_id = t.tenant_id and k.version = t.key_version
    where t.user_id = ${userId}::uuid and ${
      which === 'pending' ? tx`t.factor_id is null and t.expires_at > now()` : tx`t.factor_id is not null`
    }
    for update of t`;
  return row;
}
