import { recordFor } from '../accounts/audit-events.ts';
import { AccountsError } from '../accounts/errors.ts';
import { authorize } from '../accounts/roles.ts';
import type { Principal } from '../accounts/service.ts';
import type { TenantSql } from '../db/tenant.ts';
import { userFactors } from './factors.ts';

// ACC-8: a tenant owner can require a second factor of every member. Until a
// member sets one up, that member's sessions and tokens reach only the setup
// pages (principal.ts reads the rule with the user, on every request).

export async function requiresSecondFactor(tx: TenantSql, tenantId: string): Promise<boolean> {
  const [row] = await tx<{ require_second_factor: boolean }[]>`
    select require_second_factor from tenants where id = ${tenantId}::uuid`;
  return row?.require_second_factor ?? false;
}

/** Sets the rule (owners only); an audit event when it changes. Returns the rule now in force. */
export async function setRequireSecondFactor(
  tx: TenantSql,
  principal: Principal,
  required: boolean,
): Promise<boolean> {
  authorize(principal, 'tenant.sign_in_policy');
  const tenantId = principal.user.tenant_id;
  // An owner without a factor would hold themselves back to /profile with the rest.
  if (required && (await userFactors(tx, principal.user.id)).length === 0) {
    throw new AccountsError(
      'validation_failed',
      'Set up a second step for your own account first (on your profile), then require it of everyone.',
      'require_second_factor',
    );
  }
  const changed = await tx`
    update tenants set require_second_factor = ${required}
    where id = ${tenantId}::uuid and require_second_factor <> ${required}`;
  if (changed.count === 1) {
    await recordFor(tx, principal, {
      action: 'tenant.sign_in_policy_changed',
      target: `tenant:${tenantId}`,
      data: { tenant_id: tenantId, require_second_factor: required },
    });
  }
  return required;
}
