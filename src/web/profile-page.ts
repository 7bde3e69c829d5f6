import type { SessionListing } from '../accounts/sessions.ts';
import type { User } from '../accounts/users.ts';
import { type FormErrors, newPasswordField } from './account-pages.ts';
import { postButton, time } from './dashboard-pages.ts';
import { errorBox, field, noticeBox } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';
import { type ListPager, pagerNav } from './list-pages.ts';

// /profile: the account, its live sessions (the current one marked, each
// revocable), sign out everywhere, and the password and email forms (ACC-11).

export interface ProfileErrors {
  readonly password?: FormErrors;
  readonly email?: FormErrors;
  readonly verify?: FormErrors;
}

function fieldError(errors: FormErrors | undefined, name: string): string | undefined {
  const fields = errors?.fields ?? {};
  return Object.hasOwn(fields, name) ? fields[name] : undefined;
}

export function profilePage(
  frame: Frame,
  input: {
    user: User;
    sessions: readonly SessionListing[];
    pager: ListPager;
    currentSessionId: string | undefined;
    notice?: string | undefined;
    errors?: ProfileErrors;
    newEmail?: string | undefined;
    /** The sign-in methods' own sections (second factors, passkeys, linked identities), in order. */
    sections?: readonly Html[];
  },
): string {
  const { user } = input;
  const errors = input.errors ?? {};
  return page(
    'Profile',
    html`<h1>Profile</h1>
${noticeBox(input.notice)}
<dl class="facts">
<dt>Username</dt><dd>${user.username}</dd>
<dt>Email address</dt><dd>${user.email}${user.email_verified ? ' (verified)' : ' (not verified)'}</dd>
${
  user.pending_email === null
    ? ''
    : html`<dt>New email address</dt><dd>${user.pending_email} (waiting for confirmation: open the link we sent to it)</dd>`
}
${
  // ACC-1: an address is verified only by a link mailed to it; the first operator's never was.
  user.email_verified || user.pending_email !== null
    ? ''
    : html`<dt>Confirm it</dt><dd>${errorBox(errors.verify?.form)}${postButton(
        '/profile/email/verify',
        'Send a confirmation link',
        'Send a confirmation link to your email address',
      )}</dd>`
}
<dt>Tenant</dt><dd>${frame.tenantName}</dd>
<dt>Role</dt><dd>${user.role}${user.is_operator ? ', platform operator' : ''}</dd>
<dt>Member since</dt><dd>${time(user.created_at)}</dd>
</dl>
${input.sections ?? []}
<h2>Sessions</h2>
<table><thead><tr><th>Signed in</th><th>Last active</th><th>Browser</th><th>Address</th><th><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${input.sessions.map(
      (session) => html`<tr${session.id === input.currentSessionId ? html` class="current"` : ''}>
<td>${time(session.created_at)}${session.id === input.currentSessionId ? html` <strong>(this session)</strong>` : ''}</td>
<td>${time(session.last_seen_at)}</td><td>${session.user_agent ?? ''}</td><td>${session.client_ip ?? ''}</td>
<td><a href="/profile/sessions/${session.id}/revoke" aria-label="Sign out this session">Sign out…</a></td></tr>`,
    )}</tbody></table>
${pagerNav(input.pager, 'Pages of sessions')}
<p><a href="/profile/sessions/revoke-all">Sign out everywhere…</a></p>

<h2>Change password</h2>
<p>Changing your password signs out your other sessions.</p>
${errorBox(errors.password?.form)}
<form method="post" action="/profile/password" class="stack">
${field({
  name: 'current_password',
  id: 'f-password-current',
  label: 'Current password',
  type: 'password',
  autocomplete: 'current-password',
  error: fieldError(errors.password, 'current_password'),
})}
${newPasswordField(fieldError(errors.password, 'new_password'))}
<button type="submit">Change password</button>
</form>

<h2>Change email address</h2>
<p>We send a link to the new address; the change takes effect when you open it. Until then you sign in and
recover your account with the current address.</p>
${errorBox(errors.email?.form)}
<form method="post" action="/profile/email" class="stack">
${field({
  name: 'email',
  label: 'New email address',
  type: 'email',
  value: input.newEmail,
  autocomplete: 'email',
  maxlength: 254,
  error: fieldError(errors.email, 'email'),
})}
${field({
  name: 'current_password',
  id: 'f-email-current',
  label: 'Current password',
  type: 'password',
  autocomplete: 'current-password',
  error: fieldError(errors.email, 'current_password'),
})}
<button type="submit">Send confirmation link</button>
</form>`,
    frame,
  );
}
