import type { Sql } from 'postgres';
import { recordFor } from '../accounts/audit-events.ts';
import type { Principal } from '../accounts/service.ts';
import { type TenantSql, withTenant } from '../db/tenant.ts';
import type { RateLimits } from '../http/rate-limits.ts';
import { assertRecentSignIn } from '../signin/recent-sign-in.ts';
import type { Vault } from '../vault/service.ts';
import { FactorsError } from './errors.ts';
import {
  deleteRecoveryCodes,
  newRecoveryCodes,
  RECOVERY_CODE_COUNT,
  recoveryCodeOf,
  replaceRecoveryCodes,
  spendRecoveryCode,
  unusedRecoveryCodes,
} from './recovery-codes.ts';
import { base32Of, totpCodeOf } from './totp.ts';
import {
  confirmEnrolment,
  pendingEnrolmentUri,
  startEnrolment,
  totpFactorId,
  useTotpCode,
} from './totp-secrets.ts';

// TOTP as a second factor (ACC-8): enrolment from the profile, recovery
// codes, removal, and the checks the sign-in's second step runs. Every
// enrolment, removal and new set of codes is an audit event in the same
// transaction (AUD-1); events carry ids, kinds and counts, never a secret
// or a code.

export interface TotpDeps {
  readonly sql: Sql;
  readonly vault: Pick<Vault, 'sealTotpSecret' | 'lendTotpSecret'>;
  readonly rateLimits: Pick<RateLimits, 'consume'>;
  /** The clock codes are checked against (milliseconds). */
  readonly now?: () => number;
}

export interface TotpStatus {
  readonly factorId: string | undefined;
  readonly pending: boolean;
  readonly recoveryCodesLeft: number;
}

interface CheckedUser {
  readonly id: string;
  readonly tenant_id: string;
}

const WRONG_CODE = 'That code is not right. Enter the 6-digit code your app shows now.';
const FORMAT = 'Enter the 6 digits your authenticator app shows.';

/** A typed TOTP code, or the field error that says what is wrong with it. */
function codeOrRefuse(input: string): string {
  const code = totpCodeOf(input);
  if (code === undefined) throw new FactorsError('validation_failed', FORMAT, 'code');
  return code;
}

export function createTotpService(deps: TotpDeps) {
  const { vault } = deps;
  const now = deps.now ?? Date.now;
  const inTenant = <T>(principal: Principal, fn: (tx: TenantSql) => Promise<T>) =>
    withTenant(deps.sql, principal.user.tenant_id, fn);
  // The same shape as the other factors' events (src/signin/routes.ts).
  const factorEvent = (
    principal: Principal,
    action: string,
    factorId: string,
    extra: Record<string, unknown> = {},
  ) => ({
    action,
    target: `user:${principal.user.id}`,
    data: { user_id: principal.user.id, kind: 'totp', factor_id: factorId, ...extra },
  });
  const generated = (principal: Principal, revoked: number) => ({
    action: 'recovery_codes.generated',
    target: `user:${principal.user.id}`,
    data: { user_id: principal.user.id, count: RECOVERY_CODE_COUNT, revoked },
  });

  return {
    async status(principal: Principal): Promise<TotpStatus> {
      return inTenant(principal, async (tx) => {
        const [pending] = await tx<{ id: string }[]>`
          select id from totp_secrets
          where user_id = ${principal.user.id}::uuid and factor_id is null and expires_at > now()`;
        return {
          factorId: await totpFactorId(tx, principal.user.id),
          pending: pending !== undefined,
          recoveryCodesLeft: await unusedRecoveryCodes(tx, principal.user.id),
        };
      });
    },

    /** Starts enrolment with a fresh secret (a started one is replaced). Refused while one is enrolled. */
    async start(principal: Principal): Promise<void> {
      await inTenant(principal, async (tx) => {
        if ((await totpFactorId(tx, principal.user.id)) !== undefined) {
          throw new FactorsError(
            'validation_failed',
            'An authenticator app is already set up. Remove it first.',
          );
        }
        await startEnrolment(tx, vault, principal.user);
      });
    },

    /** What the enrolment page shows: the URI for the QR code and the secret in base32; undefined if none waits. */
    async enrolment(principal: Principal): Promise<{ uri: string; secret: string } | undefined> {
      const uri = await inTenant(principal, (tx) => pendingEnrolmentUri(tx, vault, principal.user));
      return uri === undefined ? undefined : { uri, secret: base32Of(uri) };
    },

    /**
     * Confirms enrolment with the first code from the app. Returns the ten
     * recovery codes, shown once; the old ones, if any, stop working.
     */
    async confirm(principal: Principal, input: string): Promise<string[]> {
      const code = codeOrRefuse(input);
      // Guesses at the first code are bounded per user (ACC-5).
      await deps.rateLimits.consume('totp_enrol', principal.user.id);
      return inTenant(principal, async (tx) => {
        const factorId = await confirmEnrolment(tx, vault, principal.user, code, now());
        if (factorId === undefined) {
          throw new FactorsError(
            'validation_failed',
            `${WRONG_CODE} If it still fails, check that your device's clock is right, or start again.`,
            'code',
          );
        }
        const codes = newRecoveryCodes();
        const revoked = await replaceRecoveryCodes(tx, principal.user, codes);
        await recordFor(tx, principal, factorEvent(principal, 'factor.enrolled', factorId));
        await recordFor(tx, principal, generated(principal, revoked));
        return codes;
      });
    },

    /** A new set of ten recovery codes; every old one stops working. Needs the TOTP factor and a recent sign-in. */
    async regenerateRecoveryCodes(principal: Principal): Promise<string[]> {
      assertRecentSignIn(principal);
      return inTenant(principal, async (tx) => {
        if ((await totpFactorId(tx, principal.user.id)) === undefined) {
          throw new FactorsError(
            'not_found',
            'Recovery codes come with an authenticator app: set one up first.',
          );
        }
        const codes = newRecoveryCodes();
        const revoked = await replaceRecoveryCodes(tx, principal.user, codes);
        await recordFor(tx, principal, generated(principal, revoked));
        return codes;
      });
    },

    /** Removes the TOTP factor (needs a recent sign-in); its recovery codes go too unless another factor remains. */
    async remove(principal: Principal): Promise<void> {
      assertRecentSignIn(principal);
      await inTenant(principal, async (tx) => {
        const [removed] = await tx<{ id: string }[]>`
          delete from user_factors where user_id = ${principal.user.id}::uuid and kind = 'totp' returning id`;
        if (removed === undefined) throw new FactorsError('not_found', 'No authenticator app is set up.');
        const [others] = await tx<{ count: number }[]>`
          select count(*)::int as count from user_factors where user_id = ${principal.user.id}::uuid`;
        const deleted = others?.count === 0 ? await deleteRecoveryCodes(tx, principal.user.id) : 0;
        await recordFor(
          tx,
          principal,
          factorEvent(principal, 'factor.removed', removed.id, { recovery_codes_deleted: deleted }),
        );
      });
    },

    /** The second step's TOTP check, in the sign-in's transaction: the factor id, or undefined for a wrong code. */
    checkTotp(tx: TenantSql, user: CheckedUser, input: string): Promise<string | null | undefined> {
      const code = totpCodeOf(input);
      return code === undefined ? Promise.resolve(undefined) : useTotpCode(tx, vault, user, code, now());
    },

    /** The second step's recovery-code check: null once a code is spent (a recovery code is no factor), or undefined. */
    async checkRecoveryCode(tx: TenantSql, user: CheckedUser, input: string): Promise<null | undefined> {
      const code = recoveryCodeOf(input);
      if (code === undefined) return undefined;
      return (await spendRecoveryCode(tx, user.id, code)) === undefined ? undefined : null;
    },
  };
}

export type TotpService = ReturnType<typeof createTotpService>;
