import type { Factor, FactorKind } from '../signin/factors.ts';
import { errorBox, field, noticeBox } from './forms.ts';
import { type Frame, html, page } from './html.ts';
import { passkeyStepForm } from './passkey-section.ts';

// ACC-8: the second step of signing in, and the profile's list of second
// factors. Forms only: the passkey section is the one place a script (the
// passkey helper's, from this origin) acts, and works from data- attributes.

/** An address shown on the second step without giving it away whole: a•••@example.com. */
export function maskedEmail(email: string): string {
  const at = email.lastIndexOf('@');
  return at <= 0 ? '•••' : `${email.slice(0, 1)}•••${email.slice(at)}`;
}

const codeField = (id: string, label: string, help: string) =>
  field({
    name: 'code',
    id,
    label,
    help,
    autocomplete: 'one-time-code',
    maxlength: 64,
  });

export function verifyPage(input: {
  readonly path: string;
  readonly kinds: ReadonlySet<FactorKind>;
  readonly email: string;
  /** Whether the user has an unused recovery code (they are made with TOTP, and kept while a passkey or email code remains). */
  readonly recoveryCodes: boolean;
  readonly error?: string | undefined;
  readonly notice?: string | undefined;
}): string {
  const { path, kinds } = input;
  const email = kinds.has('email')
    ? html`<section aria-labelledby="email-step"><h2 id="email-step">Code by email</h2>
<p>We sent a 6-digit code to ${maskedEmail(input.email)}. It works once and expires after 10 minutes.</p>
<form method="post" action="${path}/email" class="stack">
${codeField('f-email-code', 'Code from the email', 'Six digits.')}
<button type="submit">Continue</button>
</form>
<form method="post" action="${path}/email/send"><button type="submit">Send a new code</button></form>
</section>`
    : '';
  const totp = kinds.has('totp')
    ? html`<section aria-labelledby="totp-step"><h2 id="totp-step">Authenticator app</h2>
<form method="post" action="${path}/totp" class="stack">
${codeField('f-totp-code', 'Code from your authenticator app', 'Six digits; a new one every 30 seconds.')}
<button type="submit">Continue</button>
</form></section>`
    : '';
  const passkey = kinds.has('passkey')
    ? html`<section aria-labelledby="passkey-step"><h2 id="passkey-step">Passkey</h2>
${passkeyStepForm(path)}</section>`
    : '';
  const recovery = input.recoveryCodes
    ? html`<section aria-labelledby="recovery-step"><h2 id="recovery-step">Recovery code</h2>
<p>Lost your device? Use one of the recovery codes you saved. Each works once.</p>
<form method="post" action="${path}/recovery" class="stack">
${codeField('f-recovery-code', 'Recovery code', 'As you saved it; dashes and spaces are ignored.')}
<button type="submit">Continue</button>
</form></section>`
    : '';
  return page(
    'Confirm it is you',
    html`<h1>Confirm it is you</h1>
<p>One step done. This account has a second step: use one of the ways below. No session starts until you do.</p>
${noticeBox(input.notice)}
${errorBox(input.error)}
${email}${totp}${passkey}${recovery}
<p><a href="/login">Start again</a></p>`,
  );
}

const KIND_NAMES: Readonly<Record<FactorKind, string>> = {
  email: 'Code by email',
  totp: 'Authenticator app',
  passkey: 'Passkey',
};

/** The profile's section listing the user's second factors, with the email code's switch. */
export function secondFactorsSection(input: {
  readonly factors: readonly Factor[];
  readonly emailVerified: boolean;
  readonly required: boolean;
}): ReturnType<typeof html> {
  const email = input.factors.find((factor) => factor.kind === 'email');
  const rows = input.factors.map(
    (factor) =>
      html`<tr><td>${KIND_NAMES[factor.kind]}</td><td>${factor.name}</td><td>${factor.created_at.toISOString()}</td><td>${
        factor.last_used_at?.toISOString() ?? 'never'
      }</td></tr>`,
  );
  const emailSwitch =
    email !== undefined
      ? html`<form method="post" action="/profile/email-code/disable"><button type="submit">Turn off codes by email</button></form>`
      : input.emailVerified
        ? html`<form method="post" action="/profile/email-code/enable"><button type="submit">Turn on codes by email</button></form>`
        : html`<p class="help">Confirm your email address to use codes by email.</p>`;
  return html`<section aria-labelledby="second-factors"><h2 id="second-factors">Second step at sign-in</h2>
${
  input.required && input.factors.length === 0
    ? html`<p class="error" role="alert">Your tenant requires a second step at sign-in. Set one up below; until then only this page is open.</p>`
    : ''
}
<p>After your password (or a provider), sign-in asks for one of these. Turning one off needs a sign-in within the last 10 minutes.</p>
${
  rows.length === 0
    ? html`<p>None yet.</p>`
    : html`<table><thead><tr><th>Kind</th><th>Name</th><th>Added</th><th>Last used</th></tr></thead><tbody>${rows}</tbody></table>`
}
${emailSwitch}
</section>`;
}

export function verifyDeadPage(message: string, frame?: Frame): string {
  return page(
    'Sign in again',
    html`<h1>Sign in again</h1>${errorBox(message)}<p><a href="/login">Go to sign-in</a></p>`,
    frame,
  );
}
