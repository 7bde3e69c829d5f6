import type { PasskeyListing } from '../passkeys/store.ts';
import { time } from './dashboard-pages.ts';
import { field, hidden } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';

// Passkeys on the pages (ACC-8): the profile's list with its add form, the
// sign-in button of /login, the second step's form, and the rename page.
// Every passkey form is hidden until static/passkeys.js finds WebAuthn and
// shows it; the script runs the ceremony and submits the form, which then
// posts like any other. Nothing here runs a script inline.

/** Where @simplewebauthn/browser's bundle is served from this origin (src/passkeys/routes.ts). */
export const BROWSER_BUNDLE_PATH = '/passkeys/simplewebauthn-browser.js';

/** The two scripts behind the passkey forms: the library's browser bundle, then ours. Once per page that has any. */
const PASSKEY_SCRIPTS = html`<script src="${BROWSER_BUNDLE_PATH}" defer></script>
<script src="/static/passkeys.js" defer></script>`;

/** What a passkey form needs besides its own fields: the browser's answer, and a place for the script's message. */
function ceremonyParts(): Html {
  return html`<input type="hidden" name="credential" value="">
<p class="error" role="alert" data-passkey-error hidden></p>`;
}

function syncNote(passkey: PasskeyListing): string {
  if (!passkey.backup_eligible) return 'This device only';
  return passkey.backed_up ? 'Synced' : 'Can sync, not yet backed up';
}

/** The profile's Passkeys section: the list, each with rename and remove, and the add form. */
export function passkeySection(passkeys: readonly PasskeyListing[]): Html {
  return html`<section aria-labelledby="passkeys"><h2 id="passkeys">Passkeys</h2>
<p>A passkey signs you in with your device’s screen lock or a security key: on its own, with no password, or as
the second step after your password.</p>
${
  passkeys.length === 0
    ? html`<p class="muted">You have no passkeys yet.</p>`
    : html`<table><thead><tr><th>Name</th><th>Added</th><th>Last used</th><th>Kept</th><th><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${passkeys.map(
        (passkey) => html`<tr><td>${passkey.name}</td><td>${time(passkey.created_at)}</td>
<td>${time(passkey.last_used_at)}</td><td>${syncNote(passkey)}</td>
<td><a href="/profile/passkeys/${passkey.id}/rename" aria-label="Rename ${passkey.name}">Rename…</a>
<a href="/profile/passkeys/${passkey.id}/remove" aria-label="Remove ${passkey.name}">Remove…</a></td></tr>`,
      )}</tbody></table>`
}
<form method="post" action="/profile/passkeys" class="stack" data-passkey="register" data-options="/profile/passkeys/options" hidden>
${field({
  name: 'name',
  id: 'f-passkey-name',
  label: 'Passkey name',
  help: 'So you can tell your passkeys apart, for example “Work laptop”.',
  maxlength: 100,
})}
${ceremonyParts()}
<button type="submit">Add a passkey</button>
</form>
<p class="help" data-passkey-fallback>Adding a passkey needs JavaScript and a browser that supports passkeys.</p>
${PASSKEY_SCRIPTS}</section>`;
}

/** The "Sign in with a passkey" form of /login: a discoverable passkey, no username asked. */
export function passkeySignInForm(next: string | undefined): Html {
  return html`<form method="post" action="/login/passkey" class="stack" data-passkey="authenticate" data-options="/login/passkey/options" hidden>
${next === undefined ? '' : hidden('next', next)}
${ceremonyParts()}
<button type="submit">Sign in with a passkey</button>
</form>
${PASSKEY_SCRIPTS}`;
}

/** The passkey form of the second step; `path` is the step's page, /login/verify/:challenge. */
export function passkeyStepForm(path: string): Html {
  const action = `${path}/passkey`;
  return html`<form method="post" action="${action}" class="stack" data-passkey="authenticate" data-options="${action}/options" hidden>
${ceremonyParts()}
<button type="submit">Use a passkey</button>
</form>
<p class="help" data-passkey-fallback>Using a passkey needs JavaScript and a browser that supports passkeys.</p>
${PASSKEY_SCRIPTS}`;
}

export function renamePasskeyPage(
  frame: Frame,
  input: { passkey: PasskeyListing; value?: string | undefined; error?: string | undefined },
): string {
  const { passkey } = input;
  return page(
    'Rename passkey',
    html`<h1>Rename the passkey “${passkey.name}”</h1>
<form method="post" action="/profile/passkeys/${passkey.id}/rename" class="stack">
${field({
  name: 'name',
  label: 'New name',
  value: input.value ?? passkey.name,
  maxlength: 100,
  error: input.error,
})}
<button type="submit">Rename passkey</button>
</form>
<p><a href="/profile#passkeys">Cancel</a></p>`,
    frame,
  );
}

/** Why adding, renaming or removing a passkey did not happen, with the way back to the profile. */
export function passkeyProblemPage(frame: Frame, title: string, message: string): string {
  return page(
    title,
    html`<h1>${title}</h1>
<p class="error" role="alert">${message}</p>
<p><a href="/profile#passkeys">Back to your profile</a></p>`,
    frame,
  );
}
