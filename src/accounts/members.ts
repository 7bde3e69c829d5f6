import type { TenantSql } from '../db/tenant.ts';
import {
  afterPosition,
  boundTenant,
  type PageRequest,
  type PositionedRow,
  positionColumns,
} from '../http/page-cursor.ts';
import { recordFor } from './audit-events.ts';
import { AccountsError } from './errors.ts';
import { type Actor, authorize, may, ROLES, type Role } from './roles.ts';
import type { Principal } from './service.ts';

// A tenant's members (#11 item 10): list them, change a role, remove one.
// Every function runs in the caller's tenant transaction, so the change, the
// revocation of a removed member's sessions and tokens, and the audit event
// commit together. Who may do what is src/accounts/roles.ts: 'member.manage'
// for members and admins, 'owner.manage' for anything touching an owner.

export interface Member {
  readonly id: string;
  readonly username: string;
  readonly email: string;
  readonly role: Role;
  readonly created_at: Date;
}

const MEMBER_COLUMNS = 'id, username, email, role, created_at';

/** The member, locked until commit so two changes to one member run one after the other. */
async function lockedMember(tx: TenantSql, userId: string): Promise<Member> {
  // userId is attacker-controlled: a bound uuid; row-level security hides other tenants' users (404).
  const [member] = await tx<Member[]>`
    select ${tx.unsafe(MEMBER_COLUMNS)} from users where id = ${userId}::uuid for update`;
  if (member === undefined) throw new AccountsError('not_found', 'no such member');
  return member;
}

/**
 * Refuses to take away the tenant's last owner. The owners are locked first,
 * so two owners demoting each other at once cannot both succeed: the second
 * waits, then no longer counts the first as an owner.
 */
async function keepAnOwner(tx: TenantSql, leaving: Member): Promise<void> {
  if (leaving.role !== 'owner') return;
  const owners = await tx<{ id: string }[]>`select id from users where role = 'owner' for update`;
  if (!owners.some((owner) => owner.id !== leaving.id)) {
    throw new AccountsError(
      'last_owner',
      `${leaving.username} is the tenant's only owner: make someone else an owner first.`,
    );
  }
}

function authorizeOn(principal: Principal, target: Member, newRole?: Role): void {
  authorize(principal, 'member.manage');
  if (target.role === 'owner' || newRole === 'owner') authorize(principal, 'owner.manage');
}

/** The roles a principal may give and take away: none, member and admin, or all three. */
export function assignableRoles(principal: Actor): Role[] {
  if (!may(principal, 'member.manage')) return [];
  return ROLES.filter((role) => role !== 'owner' || may(principal, 'owner.manage'));
}

export function createMembersService() {
  return {
    /** A page of the tenant's members, oldest first, keyed by (created_at, id) (users_tenant_page index). */
    async list(tx: TenantSql, principal: Principal, page: PageRequest): Promise<(Member & PositionedRow)[]> {
      authorize(principal, 'member.list');
      return tx<(Member & PositionedRow)[]>`
        select ${tx.unsafe(MEMBER_COLUMNS)}, ${positionColumns(tx, 'created_at')} from users
        where ${boundTenant(tx)} ${afterPosition(tx, 'created_at', 'asc', page.after)}
        order by created_at, id limit ${page.limit + 1}::int4`;
    },

    /** One member of the tenant, or undefined (another tenant's is hidden by row-level security). */
    async find(tx: TenantSql, principal: Principal, userId: string): Promise<Member | undefined> {
      authorize(principal, 'member.list');
      const [member] = await tx<Member[]>`
        select ${tx.unsafe(MEMBER_COLUMNS)} from users where id = ${userId}::uuid`;
      return member;
    },

    async changeRole(tx: TenantSql, principal: Principal, userId: string, role: Role): Promise<Member> {
      const target = await lockedMember(tx, userId);
      authorizeOn(principal, target, role);
      if (target.role === role) return target;
      if (role !== 'owner') await keepAnOwner(tx, target);
      const [changed] = await tx<Member[]>`
        update users set role = ${role} where id = ${userId}::uuid returning ${tx.unsafe(MEMBER_COLUMNS)}`;
      if (changed === undefined) throw new AccountsError('not_found', 'no such member');
      await recordFor(tx, principal, {
        action: 'member.role_changed',
        target: `user:${userId}`,
        data: { user_id: userId, from: target.role, to: role },
      });
      return changed;
    },

    /**
     * Removes a member from the tenant. Their sessions and API tokens go with
     * the account (on delete cascade) in this transaction: the next request
     * they make with either is unauthenticated.
     */
    async remove(tx: TenantSql, principal: Principal, userId: string): Promise<void> {
      const target = await lockedMember(tx, userId);
      authorizeOn(principal, target);
      await keepAnOwner(tx, target);
      const [revoked = { sessions: 0, tokens: 0 }] = await tx<{ sessions: number; tokens: number }[]>`
        select
          (select count(*)::int from sessions
           where user_id = ${userId}::uuid and revoked_at is null and expires_at > now()) as sessions,
          (select count(*)::int from api_tokens
           where user_id = ${userId}::uuid and revoked_at is null
             and (expires_at is null or expires_at > now())) as tokens`;
      await tx`delete from users where id = ${userId}::uuid`;
      await recordFor(tx, principal, {
        action: 'member.removed',
        target: `user:${userId}`,
        data: {
          user_id: userId,
          username: target.username,
          role: target.role,
          sessions_revoked: revoked.sessions,
          tokens_revoked: revoked.tokens,
        },
      });
    },
  };
}

export type MembersService = ReturnType<typeof createMembersService>;
