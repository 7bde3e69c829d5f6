import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import type { Sql } from 'postgres';
import { withLookup } from '../db/lookup.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import { enqueueJob } from '../jobs/queue.ts';

// ACC-8: a sign-in that passed its first step (a password, a provider) and
// waits for a second factor. The row is found only through the hash of a
// random value in a cookie on the browser that passed the first step, and the
// URL's id must name the same row: a challenge id alone, seen in a log or an
// address bar, opens nothing. No session exists until the step is passed.

export const CHALLENGE_COOKIE = 'enclave_sign_in';
/** The cookie is sent only to the second step's own pages. */
export const CHALLENGE_COOKIE_PATH = '/login/verify';
export const CHALLENGE_MINUTES = 10;
/** Wrong codes one challenge takes before it is dead and the first step must be passed again. */
export const MAX_FAILED_ATTEMPTS = 5;
/** Email codes one challenge may send (the first included). */
export const MAX_EMAIL_CODES = 3;
export const EMAIL_CODE_MINUTES = 10;
const EMAIL_CODE_DIGITS = 6;

export interface Challenge {
  readonly id: string;
  readonly tenant_id: string;
  readonly user_id: string;
  readonly first_step: string;
  readonly next_path: string | null;
  readonly failed_attempts: number;
  readonly email_code_hash: string | null;
  readonly email_code_expires_at: Date | null;
  readonly email_codes_sent: number;
}

export interface OpenedChallenge {
  readonly id: string;
  /** Goes into the browser's cookie; only its hash is stored. */
  readonly browserToken: string;
}

const COLUMNS =
  'id, tenant_id, user_id, first_step, next_path, failed_attempts, email_code_hash, email_code_expires_at, email_codes_sent';

function browserHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Opens a challenge for the user, in the caller's tenant-bound transaction.
 * When the user has the email factor, the first code is queued at once.
 * The user's expired challenges are pruned here, within the tenant.
 */
export async function openChallenge(
  tx: TenantSql,
  input: { tenantId: string; userId: string; firstStep: string; next: string | undefined; mailCode: boolean },
): Promise<OpenedChallenge> {
  await tx`
    delete from sign_in_challenges
    where user_id = ${input.userId}::uuid and (completed_at is not null or expires_at < now())`;
  const browserToken = randomBytes(32).toString('base64url');
  const [row] = await tx<{ id: string }[]>`
    insert into sign_in_challenges (tenant_id, user_id, browser_hash, first_step, next_path, expires_at,
                                    email_codes_sent)
    values (${input.tenantId}::uuid, ${input.userId}::uuid, ${browserHash(browserToken)}, ${input.firstStep},
            ${input.next ?? null}, now() + make_interval(mins => ${CHALLENGE_MINUTES}),
            ${input.mailCode ? 1 : 0})
    returning id`;
  if (row === undefined) throw new Error('insert into sign_in_challenges returned no row');
  if (input.mailCode) await queueEmailCode(tx, input.tenantId, row.id);
  return { id: row.id, browserToken };
}

/**
 * The live challenge a browser's cookie and the URL's id name together, in
 * a transaction bound to its tenant with the row locked (two attempts at once
 * take turns), or undefined: unknown, another browser's, expired, used, or
 * out of attempts.
 */
export async function withLiveChallenge<T>(
  sql: Sql,
  found: { id: string; browserToken: string },
  fn: (tx: TenantSql, challenge: Challenge) => Promise<T>,
): Promise<T | undefined> {
  const hash = browserHash(found.browserToken);
  const located = await withLookup(sql, hash, async (tx) => {
    const [row] = await tx<{ tenant_id: string }[]>`
      select tenant_id from sign_in_challenges
      where browser_hash = enclave.current_lookup() and id = ${found.id}::uuid`;
    return row;
  });
  if (located === undefined) return undefined;
  return withTenant(sql, located.tenant_id, async (tx) => {
    const [challenge] = await tx<Challenge[]>`
      select ${tx.unsafe(COLUMNS)} from sign_in_challenges
      where id = ${found.id}::uuid and browser_hash = ${hash} and completed_at is null
        and expires_at > now() and failed_attempts < ${MAX_FAILED_ATTEMPTS}
      for update`;
    return challenge === undefined ? undefined : fn(tx, challenge);
  });
}

export async function countFailure(tx: TenantSql, challengeId: string): Promise<number> {
  const [row] = await tx<{ failed_attempts: number }[]>`
    update sign_in_challenges set failed_attempts = failed_attempts + 1
    where id = ${challengeId}::uuid returning failed_attempts`;
  return row?.failed_attempts ?? MAX_FAILED_ATTEMPTS;
}

export async function completeChallenge(tx: TenantSql, challengeId: string): Promise<void> {
  await tx`
    update sign_in_challenges set completed_at = now(), email_code_hash = null
    where id = ${challengeId}::uuid`;
}

// Email codes. The job mints the code when it sends it (a retry mints a new
// one), so no plaintext code sits in the job table. The stored hash is
// SHA-256 over the challenge id and the code: six digits are guessable
// offline from a database copy, but a guessed code is useless without the
// browser's cookie, whose value the database does not hold.

function emailCodeHash(challengeId: string, code: string): string {
  return createHash('sha256').update(`${challengeId}:${code}`, 'utf8').digest('hex');
}

export interface SignInCodePayload {
  readonly tenantId: string;
  readonly challengeId: string;
}

export async function queueEmailCode(tx: TenantSql, tenantId: string, challengeId: string): Promise<void> {
  const payload: SignInCodePayload = { tenantId, challengeId };
  await enqueueJob(tx, 'send_sign_in_code', payload, { maxAttempts: 3 });
}

/** Counts a requested resend; false when the challenge has sent all it may. */
export async function spendEmailCode(tx: TenantSql, challengeId: string): Promise<boolean> {
  const rows = await tx`
    update sign_in_challenges set email_codes_sent = email_codes_sent + 1
    where id = ${challengeId}::uuid and email_codes_sent < ${MAX_EMAIL_CODES}`;
  return rows.count === 1;
}

/**
 * For the mail job: a fresh code for the live challenge, its hash stored
 * with its own expiry, and the address to send it to. Undefined when the
 * challenge is gone or the user no longer has the email factor.
 */
export async function mintEmailCode(
  sql: Sql,
  payload: SignInCodePayload,
): Promise<{ to: string; username: string; code: string } | undefined> {
  return withTenant(sql, payload.tenantId, async (tx) => {
    const [target] = await tx<{ to: string; username: string }[]>`
      select u.email as "to", u.username from sign_in_challenges c join users u on u.id = c.user_id
      where c.id = ${payload.challengeId}::uuid and c.completed_at is null and c.expires_at > now()
        and exists (select 1 from user_factors f where f.user_id = u.id and f.kind = 'email')`;
    if (target === undefined) return undefined;
    const code = String(randomInt(10 ** EMAIL_CODE_DIGITS)).padStart(EMAIL_CODE_DIGITS, '0');
    await tx`
      update sign_in_challenges
      set email_code_hash = ${emailCodeHash(payload.challengeId, code)},
          email_code_expires_at = now() + make_interval(mins => ${EMAIL_CODE_MINUTES})
      where id = ${payload.challengeId}::uuid`;
    return { ...target, code };
  });
}

/** Whether a typed code is the challenge's live email code (compared in constant time). */
export function emailCodeMatches(challenge: Challenge, typed: string, now = new Date()): boolean {
  if (challenge.email_code_hash === null || challenge.email_code_expires_at === null) return false;
  if (challenge.email_code_expires_at <= now) return false;
  const code = typed.replace(/\s+/g, '');
  if (!/^[0-9]{6}$/.test(code)) return false;
  return timingSafeEqual(
    Buffer.from(emailCodeHash(challenge.id, code), 'hex'),
    Buffer.from(challenge.email_code_hash, 'hex'),
  );
}
