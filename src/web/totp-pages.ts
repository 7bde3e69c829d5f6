import type { TotpStatus } from '../factors/totp-service.ts';
import { errorBox, field, noticeBox } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';

// /profile/totp: the authenticator app as a second sign-in step (ACC-8).
// The enrolment page shows the QR code (inline SVG drawn on the server) and
// the secret as text; the recovery codes appear once, on the page the
// confirmation redirects to (secret-flash.ts). No script on any of them.

const NOTICES = {
  removed: 'The authenticator app was removed. Signing in no longer asks for its codes.',
} as const;

/** The notice a redirect names (?notice=…): only these keys, as these fixed texts. */
export function totpNotice(query: unknown): string | undefined {
  const notice = (query as { notice?: unknown } | undefined)?.notice;
  return typeof notice === 'string' && Object.hasOwn(NOTICES, notice)
    ? NOTICES[notice as keyof typeof NOTICES]
    : undefined;
}

/** The /profile section: whether the authenticator app is on, with the link to manage it. */
export function totpProfileSection(status: TotpStatus): Html {
  return html`<section aria-labelledby="totp-section"><h2 id="totp-section">Authenticator app</h2>
<p>${
    status.factorId === undefined
      ? 'Off. Codes from an app on your phone as a second step at sign-in, with recovery codes.'
      : `On, with ${status.recoveryCodesLeft} of 10 recovery codes left.`
  } <a href="/profile/totp">${status.factorId === undefined ? 'Set up an authenticator app' : 'Manage'}</a></p>
</section>`;
}

export function totpPage(
  frame: Frame,
  input: { status: TotpStatus; notice?: string | undefined; error?: string | undefined },
): string {
  const { status } = input;
  return page(
    'Authenticator app',
    html`<h1>Authenticator app</h1>
<p><a href="/profile">Back to your profile</a></p>
${noticeBox(input.notice)}${errorBox(input.error)}
${
  status.factorId === undefined
    ? html`<p>An authenticator app (Google Authenticator, 1Password, Aegis, …) makes a new 6-digit code every
30 seconds. Once it is set up, signing in asks for a code after your password.</p>
${
  status.pending
    ? html`<p>You started setting one up. <a href="/profile/totp/enrol">Continue</a>, or start again.</p>`
    : ''
}
<form method="post" action="/profile/totp/start" class="stack">
<button type="submit">${status.pending ? 'Start again' : 'Set up an authenticator app'}</button>
</form>`
    : html`<p><strong>On.</strong> Signing in asks for a code from your authenticator app after your password.</p>
<h2>Recovery codes</h2>
<p>${status.recoveryCodesLeft} of 10 recovery codes left. Each signs you in once if you lose your device.</p>
<p><a href="/profile/totp/recovery-codes/regenerate">Make new recovery codes…</a></p>
<h2>Remove</h2>
<p><a href="/profile/totp/remove">Remove the authenticator app…</a></p>`
}`,
    frame,
  );
}

export function totpEnrolPage(
  frame: Frame,
  input: { qr: Html; secret: string; error?: string | undefined },
): string {
  return page(
    'Set up an authenticator app',
    html`<h1>Set up an authenticator app</h1>
<ol>
<li>Scan this QR code with your authenticator app.
<figure class="qr">${input.qr}</figure>
If you cannot scan it, enter this key in the app instead (time-based, 6 digits, 30 seconds):
<p><code class="token" id="totp-secret">${groupsOf(input.secret)}</code></p></li>
<li>Enter the code the app shows to finish.</li>
</ol>
${errorBox(input.error === undefined ? undefined : 'Check the field marked below.')}
<form method="post" action="/profile/totp/confirm" class="stack">
${field({
  name: 'code',
  label: 'Code from the app',
  autocomplete: 'one-time-code',
  maxlength: 10,
  error: input.error,
})}
<button type="submit">Turn on</button>
</form>
<p><a href="/profile/totp">Cancel</a></p>`,
    frame,
  );
}

/** The codes just made, once; undefined (a reload, a second visit) says they are not shown again. */
export function recoveryCodesPage(frame: Frame, codes: readonly string[] | undefined): string {
  return page(
    'Recovery codes',
    codes === undefined
      ? html`<h1>Recovery codes</h1>
<p>Recovery codes are shown only once, when they are made. If you did not save them, make new ones: the old
ones then stop working.</p>
<p><a href="/profile/totp">Back to the authenticator app</a></p>`
      : html`<h1>Your recovery codes</h1>
<p class="warning">Save these now: they are shown only this once. Each one signs you in once in place of a code
from your app. Keep them somewhere apart from your device, such as a password manager or on paper.</p>
<ul class="recovery-codes" id="recovery-codes">${codes.map((code) => html`<li><code>${code}</code></li>`)}</ul>
<p><a href="/profile/totp">Done</a></p>`,
    frame,
  );
}

/** The base32 secret in groups of four, easier to type; apps ignore the spaces. */
function groupsOf(secret: string): string {
  return secret.replace(/(.{4})(?=.)/g, '$1 ');
}
