import type { Member } from '../accounts/members.ts';
import type { Role } from '../accounts/roles.ts';
import { errorBox, noticeBox, selectField } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';
import { type ListPager, pagerNav } from './list-pages.ts';

// /dashboard/members: the tenant's members with their roles; for those who
// may manage members, a role form per member and a remove link that asks
// for confirmation on a page of its own.

const NOTICES: Readonly<Record<string, string>> = {
  'role-changed': 'The role was changed.',
  'member-removed': 'The member was removed; their sessions and API tokens no longer work.',
  'sign-in-policy-changed': 'The sign-in rule was changed.',
};

/** The notice a redirect named (?notice=…), from the fixed list only: the query is attacker-controlled. */
export function membersNoticeFrom(query: unknown): string | undefined {
  const notice = (query as { notice?: unknown } | undefined)?.notice;
  return typeof notice === 'string' && Object.hasOwn(NOTICES, notice) ? NOTICES[notice] : undefined;
}

const ROLE_NAMES: Record<Role, string> = { owner: 'Owner', admin: 'Admin', member: 'Member' };

export interface MembersPageInput {
  readonly members: readonly Member[];
  readonly pager: ListPager;
  readonly currentUserId: string;
  /** The roles this user may give and take away (none: the list is read-only). */
  readonly assignable: readonly Role[];
  readonly notice?: string | undefined;
  readonly error?: string | undefined;
  /** The tenant's second-factor rule (ACC-8); shown with its switch to owners, as a fact to others. */
  readonly requireSecondFactor: boolean;
  readonly canSetPolicy: boolean;
}

function policySection(input: MembersPageInput): Html {
  const state = input.requireSecondFactor
    ? 'Every member must use a second step at sign-in. A member without one can reach only the page that sets one up.'
    : 'A second step at sign-in is up to each member.';
  if (!input.canSetPolicy) return html`<h2>Sign-in rule</h2><p>${state}</p>`;
  return html`<h2>Sign-in rule</h2><p>${state}</p>
<form method="post" action="/dashboard/members/sign-in-policy" class="inline">
<input type="hidden" name="require_second_factor" value="${input.requireSecondFactor ? 'false' : 'true'}">
<button type="submit">${input.requireSecondFactor ? 'Stop requiring a second step' : 'Require a second step of every member'}</button>
</form>`;
}

export function membersPage(frame: Frame, input: MembersPageInput): string {
  const manages = (member: Member) => input.assignable.includes(member.role);
  const choices = input.assignable.map((role) => [role, ROLE_NAMES[role]] as const);
  return page(
    'Members',
    html`<h1>Members</h1>
${noticeBox(input.notice)}
${errorBox(input.error)}
<table>
<thead><tr><th>User</th><th>Email</th><th>Role</th><th>Joined</th><th></th></tr></thead>
<tbody>${input.members.map(
      (member) => html`<tr>
<td>${member.username}${member.id === input.currentUserId ? ' (you)' : ''}</td>
<td>${member.email}</td>
<td>${
        manages(member)
          ? html`<form method="post" action="/dashboard/members/${member.id}/role" class="inline">
${selectField({ name: 'role', label: `Role of ${member.username}`, choices, selected: member.role })}
<button type="submit">Change role</button>
</form>`
          : ROLE_NAMES[member.role]
      }</td>
<td>${member.created_at.toISOString().slice(0, 10)}</td>
<td>${manages(member) ? html`<a href="/dashboard/members/${member.id}/remove">Remove</a>` : ''}</td>
</tr>`,
    )}</tbody>
</table>
${pagerNav(input.pager, 'Pages of members')}
${policySection(input)}
<p>What each role may do is listed in the README, under “Roles”.${
      input.assignable.length === 0 ? ' Only owners and admins change roles or remove members.' : ''
    }</p>`,
    frame,
  );
}

export function removeMemberPage(frame: Frame, member: Member, self: boolean): string {
  return page(
    `Remove ${member.username}`,
    html`<h1>Remove ${member.username}?</h1>
<p class="warning">${
      self ? 'You are removing yourself: you will be signed out. ' : ''
    }This deletes the account <code>${member.username}</code> (${ROLE_NAMES[member.role]}) from the tenant and ends all of its sessions and API tokens at once. Agents it created stay, managed by owners and admins. The audit log keeps the record.</p>
<form method="post" action="/dashboard/members/${member.id}/remove" class="stack">
<button type="submit" class="danger">Remove member</button>
</form>
<p><a href="/dashboard/members">Cancel</a></p>`,
    frame,
  );
}
