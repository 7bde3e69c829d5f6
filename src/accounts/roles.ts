import { Type } from 'typebox';
import { AccountsError } from './errors.ts';

// What each tenant role may do: the one table the service layer enforces
// (and README "Roles" repeats). An action is one row; a new capability (relay
// approvals, say) adds a row here and the generated test in
// test/roles.test.ts probes it as every role.
//
// A grant is 'any' (every such thing in the tenant), 'own' (only agents this
// user created) or 'none'. Actions on members have one rule beside the
// table: only an owner touches an owner (changes or removes one, or makes
// someone one), which is the 'owner.manage' row, and a tenant always keeps
// at least one owner (src/accounts/members.ts).

export const ROLES = ['owner', 'admin', 'member'] as const;
export type Role = (typeof ROLES)[number];
/** A role as the API shows and takes it. */
export const RoleSchema = Type.Union([Type.Literal('owner'), Type.Literal('admin'), Type.Literal('member')]);
export type Grant = 'any' | 'own' | 'none';

export const PERMISSIONS = {
  /** List and read agents: settings, instance state, credential names and last 4 characters. */
  'agent.read': { owner: 'any', admin: 'any', member: 'any' },
  'agent.create': { owner: 'any', admin: 'any', member: 'any' },
  /** Rename, change settings and egress allowlist, start, stop, restart, delete. */
  'agent.manage': { owner: 'any', admin: 'any', member: 'own' },
  /** The instance's unguessable address (AGT-3), its output log and its egress records. */
  'agent.address': { owner: 'any', admin: 'any', member: 'own' },
  /** Add, replace and delete credentials (values are never readable by anyone). */
  'credential.manage': { owner: 'any', admin: 'any', member: 'own' },
  /** Read, export and prove the tenant's audit log. */
  'audit.read': { owner: 'any', admin: 'any', member: 'none' },
  /** List, create and revoke member invites (with the invitees' emails). */
  'invite.manage': { owner: 'any', admin: 'any', member: 'none' },
  'member.list': { owner: 'any', admin: 'any', member: 'any' },
  /** Change a member's or admin's role (to member or admin) and remove them. */
  'member.manage': { owner: 'any', admin: 'any', member: 'none' },
  /** Require a second factor of every member (ACC-8). */
  'tenant.sign_in_policy': { owner: 'any', admin: 'none', member: 'none' },
  /** Change or remove an owner, or make someone an owner. */
  'owner.manage': { owner: 'any', admin: 'none', member: 'none' },
  /** Approve, deny and revoke connections to an agent of the tenant (RLY-2). */
  'relay.approve': { owner: 'any', admin: 'any', member: 'own' },
} as const satisfies Record<string, Record<Role, Grant>>;

export type Action = keyof typeof PERMISSIONS;
export const ACTIONS = Object.keys(PERMISSIONS) as Action[];

/**
 * Whether `role` may take `action`. For an 'own' grant, `createdBy` is the
 * creator of the agent acted on (null once that user was removed); actions
 * on no particular agent (listing, creating) pass undefined.
 */
export function roleMay(role: Role, userId: string, action: Action, createdBy?: string | null): boolean {
  const grant: Grant = PERMISSIONS[action][role];
  if (grant === 'any') return true;
  if (grant === 'none') return false;
  return createdBy !== undefined && createdBy !== null && createdBy === userId;
}

/** Who acts: a principal's user (structural, so this table imports no service). */
export interface Actor {
  readonly user: { readonly id: string; readonly role: Role };
}

export function may(principal: Actor, action: Action, createdBy?: string | null): boolean {
  return roleMay(principal.user.role, principal.user.id, action, createdBy);
}

/** What a refused user is told, per action: names the rule, and whom to ask where that helps. */
export const REFUSALS: Readonly<Record<Action, string>> = {
  'agent.read': 'Your role cannot read agents.',
  'agent.create': 'Your role cannot create agents.',
  'agent.manage': 'Members manage only the agents they created; ask an owner or admin.',
  'agent.address': "Only the agent's creator, owners and admins see its address, output and egress.",
  'credential.manage': 'Members manage credentials only of the agents they created.',
  'audit.read': 'Only owners and admins read the audit log.',
  'invite.manage': 'Only owners and admins manage invites.',
  'member.list': 'Your role cannot list members.',
  'member.manage': 'Only owners and admins change roles or remove members.',
  'tenant.sign_in_policy': 'Only owners change the tenant’s sign-in rule.',
  'owner.manage': 'Only an owner changes or removes an owner, or makes someone an owner.',
  'relay.approve':
    'Members approve, deny and revoke connections only to the agents they created; ask an owner or admin.',
};

/** Throws `forbidden` (403) unless the principal's role allows the action. */
export function authorize(principal: Actor, action: Action, createdBy?: string | null): void {
  if (!may(principal, action, createdBy)) throw new AccountsError('forbidden', REFUSALS[action]);
}
