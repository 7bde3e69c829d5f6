import type { ApiTokenListing } from '../accounts/api-tokens.ts';
import type { Invite } from '../accounts/invites.ts';
import type { FormErrors } from './account-pages.ts';
import { COPY_SCRIPT, copyButton } from './copy.ts';
import { errorBox, field, hidden, noticeBox, selectField } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';
import { type ListPager, pagerNav } from './list-pages.ts';

// The signed-in shell: the dashboard, API tokens and invites. Secrets (a new
// token, an invite link) appear once, on the GET page the form redirects to
// (post/redirect/get, secret-flash.ts), sent with Cache-Control: no-store.

export function time(value: Date | null): Html {
  if (value === null) return html`<span class="muted">—</span>`;
  const iso = value.toISOString();
  return html`<time datetime="${iso}">${iso.slice(0, 16).replace('T', ' ')} UTC</time>`;
}

function fieldError(errors: FormErrors, name: string): string | undefined {
  const fields = errors.fields ?? {};
  return Object.hasOwn(fields, name) ? fields[name] : undefined;
}

/** A one-button form that POSTs to `action`. */
export function postButton(action: string, label: string, accessibleName?: string): Html {
  return html`<form method="post" action="${action}" class="inline"><button type="submit"${
    accessibleName ? html` aria-label="${accessibleName}"` : ''
  }>${label}</button></form>`;
}

export function dashboardPage(
  frame: Frame,
  input: { pendingEmail: string | null; notice?: string | undefined },
): string {
  return page(
    'Dashboard',
    html`<h1>Welcome, ${frame.username}</h1>
${noticeBox(input.notice)}
<p>You are signed in to the tenant <strong>${frame.tenantName}</strong>.</p>
${
  input.pendingEmail === null
    ? ''
    : html`<p class="notice">Your new email address ${input.pendingEmail} is waiting for confirmation: open the link we
sent to it.</p>`
}
<h2>Your tenant</h2>
<ul class="sections">
<li><a href="/dashboard/agents">Agents</a> — onboard agents from templates and manage their credentials</li>
<li><a href="/dashboard/connections">Connections</a> — requests to reach your agents, and yours to reach others’</li>
<li><a href="/directory">Directory</a> — find other tenants’ agents to connect to</li>
<li><a href="/dashboard/threads">Threads</a> — conversations other tenants hold with your agents, with your replies</li>
${frame.canReadAudit ? html`<li><a href="/dashboard/audit">Audit log</a> — every security-relevant action, hash-chained, to read and export</li>` : ''}
</ul>
<h2>Settings</h2>
<ul class="sections">
<li><a href="/dashboard/settings/tokens">API tokens</a> — for scripts and tools that call the API</li>
${frame.canInvite ? html`<li><a href="/dashboard/settings/invites">Invites</a> — bring people in</li>` : ''}
<li><a href="/dashboard/members">Members</a> — who is in the tenant, and their roles</li>
<li><a href="/profile">Profile</a> — password, email address and sessions</li>
</ul>`,
    frame,
  );
}

export function notFoundPage(frame: Frame | undefined, what: string): string {
  return page(
    'Not found',
    html`<h1>Not found</h1>
<p>There is no such ${what}, or it is no longer active.</p>`,
    frame,
  );
}

/**
 * The step before an action that cannot be undone: what it does, one button
 * that does it (a POST), and a way back. It works without JavaScript.
 */
export function confirmPage(
  frame: Frame,
  input: { title: string; consequence: string; action: string; button: string; back: string },
): string {
  return page(
    input.title,
    html`<h1>${input.title}</h1>
<p class="warning">${input.consequence}</p>
<form method="post" action="${input.action}" class="stack">
<button type="submit" class="danger">${input.button}</button>
</form>
<p><a href="${input.back}">Cancel</a></p>`,
    frame,
  );
}

/** The link to an action's confirmation step (confirmPage). */
function confirmLink(href: string, label: string, accessibleName: string): Html {
  return html`<a href="${href}" aria-label="${accessibleName}">${label}</a>`;
}

export function forbiddenPage(frame: Frame, message: string): string {
  return page('Not allowed', html`<h1>Not allowed</h1><p>${message}</p>`, frame);
}

export function tokensPage(
  frame: Frame,
  input: {
    tokens: readonly ApiTokenListing[];
    pager: ListPager;
    minted?: { name: string; token: string } | undefined;
    values?: { name?: string | undefined; scope?: string | undefined; expires_at?: string | undefined };
    errors?: FormErrors;
    notice?: string | undefined;
  },
): string {
  const errors = input.errors ?? {};
  const values = input.values ?? {};
  return page(
    'API tokens',
    html`<h1>API tokens</h1>
${noticeBox(input.notice)}
${
  input.minted === undefined
    ? ''
    : html`<section class="secret" aria-labelledby="new-token">
<h2 id="new-token">New token “${input.minted.name}”</h2>
<p class="warning">Copy it now. This is the only time it is shown: we keep only a hash of it.</p>
<p><code class="token" id="new-token-value">${input.minted.token}</code></p>
<p>${copyButton('new-token-value', 'the token')}</p>
</section>
${COPY_SCRIPT}`
}
<p>Send a token as <code>Authorization: Bearer enc_live_…</code>. A read token can only read.</p>
${
  input.tokens.length === 0
    ? html`<p class="muted">No tokens yet.</p>`
    : html`<table><thead><tr><th>Name</th><th>Token</th><th>Scope</th><th>Created</th><th>Last used</th><th>Expires</th><th><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${input.tokens.map(
        (
          token,
        ) => html`<tr><td>${token.name}</td><td><code>${token.prefix}…${token.last4}</code></td><td>${token.scope}</td>
<td>${time(token.created_at)}</td><td>${time(token.last_used_at)}</td><td>${time(token.expires_at)}</td>
<td>${confirmLink(`/dashboard/settings/tokens/${token.id}/revoke`, 'Revoke…', `Revoke ${token.name}`)}</td></tr>`,
      )}</tbody></table>`
}
${pagerNav(input.pager, 'Pages of API tokens')}
<h2>Create a token</h2>
${errorBox(errors.form)}
<form method="post" action="/dashboard/settings/tokens" class="stack">
${field({ name: 'name', label: 'Name', value: values.name, maxlength: 100, error: fieldError(errors, 'name') })}
${selectField({
  name: 'scope',
  label: 'Scope',
  choices: [
    ['read', 'read — can only read'],
    ['write', 'write — can read and change'],
  ],
  selected: values.scope ?? 'read',
  error: fieldError(errors, 'scope'),
})}
${field({
  name: 'expires_at',
  label: 'Expires (optional)',
  type: 'date',
  value: values.expires_at,
  required: false,
  help: 'The token stops working at the end of this day (UTC). Leave empty for no expiry.',
  error: fieldError(errors, 'expires_at'),
})}
<button type="submit">Create token</button>
</form>`,
    frame,
  );
}

const KIND_TEXT: Readonly<Record<string, string>> = {
  member: 'member of this tenant',
  tenant: 'new tenant',
  operator: 'first operator',
};

export function invitesPage(
  frame: Frame,
  input: {
    invites: readonly Invite[];
    pager: ListPager;
    kinds: readonly ('member' | 'tenant')[];
    /** `link` is shown for signup invites only; a member invite is mailed, never shown (ACC-1). */
    created?: { link: string | undefined; email: string | null } | undefined;
    values?: { email?: string | undefined; kind?: string | undefined; expires_days?: string | undefined };
    errors?: FormErrors;
    notice?: string | undefined;
  },
): string {
  const errors = input.errors ?? {};
  const values = input.values ?? {};
  const kindChoice =
    input.kinds.length > 1
      ? selectField({
          name: 'kind',
          label: 'Invite to',
          choices: input.kinds.map((kind) => [kind, KIND_TEXT[kind] ?? kind] as const),
          selected: values.kind,
          error: fieldError(errors, 'kind'),
        })
      : hidden('kind', input.kinds[0] ?? 'member');
  return page(
    'Invites',
    html`<h1>Invites</h1>
${noticeBox(input.notice)}
${
  input.created === undefined
    ? ''
    : input.created.link === undefined
      ? html`<section class="notice" aria-labelledby="new-invite">
<h2 id="new-invite">Invite mailed to ${input.created.email ?? 'anyone'}</h2>
<p>We mailed the invite link to this address. Nobody else sees the link, so signing up with it also confirms
the address. It works once, for this address only.</p>
</section>`
      : html`<section class="secret" aria-labelledby="new-invite">
<h2 id="new-invite">Invite link for ${input.created.email ?? 'anyone'}</h2>
<p class="warning">Send this link to the person you invite. This is the only time it is shown: we keep only a
hash of it. It works once, for this address only.</p>
<p><code class="token" id="new-invite-link">${input.created.link}</code></p>
<p>${copyButton('new-invite-link', 'the invite link')}</p>
</section>
${COPY_SCRIPT}`
}
${
  input.invites.length === 0
    ? html`<p class="muted">No invites yet.</p>`
    : html`<table><thead><tr><th>For</th><th>Kind</th><th>State</th><th>Created</th><th>Expires</th><th><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${input.invites.map(
        (
          invite,
        ) => html`<tr><td>${invite.email ?? '(any address)'}</td><td>${KIND_TEXT[invite.kind] ?? invite.kind}</td>
<td>${invite.state}</td><td>${time(invite.created_at)}</td><td>${time(invite.expires_at)}</td>
<td>${
          invite.state === 'pending'
            ? confirmLink(
                `/dashboard/settings/invites/${invite.id}/revoke`,
                'Revoke…',
                `Revoke the invite for ${invite.email ?? 'any address'}`,
              )
            : ''
        }</td></tr>`,
      )}</tbody></table>`
}
${pagerNav(input.pager, 'Pages of invites')}
<h2>Invite someone</h2>
${errorBox(errors.form)}
<form method="post" action="/dashboard/settings/invites" class="stack">
${field({
  name: 'email',
  label: 'Their email address',
  type: 'email',
  value: values.email,
  maxlength: 254,
  help: 'The invite works only for this address.',
  error: fieldError(errors, 'email'),
})}
${kindChoice}
${selectField({
  name: 'expires_days',
  label: 'Expires after',
  choices: [
    ['1', '1 day'],
    ['7', '7 days'],
    ['30', '30 days'],
  ],
  selected: values.expires_days ?? '7',
  error: fieldError(errors, 'expires_days'),
})}
<button type="submit">Create invite</button>
</form>`,
    frame,
  );
}
