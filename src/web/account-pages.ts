import { MIN_PASSWORD_CHARS } from '../accounts/validation.ts';
import { errorBox, field, hidden, noticeBox } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';
import { passkeySignInForm } from './passkey-section.ts';

// The pages of someone who is not signed in yet: signup, sign-in, recovery,
// email verification, and the plain message page that answers a bad link.

export const LIMITS = {
  invite: 200,
  email: 254,
  username: 64,
  password: 4096,
  login: 254,
  next: 1000,
} as const;

export const USERNAME_HELP = '3 to 32 characters: lower-case letters a–z, digits 0–9, _ and -.';
export const PASSWORD_HELP = `At least ${MIN_PASSWORD_CHARS} characters (at most 1024 bytes).`;

/** The "new password" field of recovery and of the profile's password change. */
export function newPasswordField(error: string | undefined): Html {
  return field({
    name: 'new_password',
    label: 'New password',
    type: 'password',
    autocomplete: 'new-password',
    help: PASSWORD_HELP,
    error,
  });
}

/** Errors keyed by field name, plus one for the whole form. */
export interface FormErrors {
  readonly form?: string | undefined;
  readonly fields?: Readonly<Record<string, string>>;
}

function fieldError(errors: FormErrors, name: string): string | undefined {
  const fields = errors.fields ?? {};
  return Object.hasOwn(fields, name) ? fields[name] : undefined;
}

/** A page that says one thing, with an optional way on; no form. */
export function messagePage(title: string, message: string, link?: { href: string; text: string }): string {
  return page(
    title,
    html`<h1>${title}</h1>
<p>${message}</p>
${link ? html`<p><a href="${link.href}">${link.text}</a></p>` : ''}`,
  );
}

/** A configured sign-in provider, as its buttons show it. */
export interface ProviderButton {
  readonly name: string;
  readonly label: string;
}

/** One form per provider, posting to /auth/:name/start (ACC-9); a sign-up carries its invite. */
export function providerButtons(
  providers: readonly ProviderButton[],
  verb: 'Sign in' | 'Sign up',
  carry: { invite?: string | undefined; next?: string | undefined },
): Html {
  if (providers.length === 0) return html``;
  return html`<div class="providers">${providers.map(
    (provider) => html`<form method="post" action="/auth/${provider.name}/start" class="inline">
${carry.invite === undefined ? '' : hidden('invite', carry.invite)}${carry.next === undefined ? '' : hidden('next', carry.next)}<button type="submit">${verb} with ${provider.label}</button>
</form>`,
  )}</div>`;
}

export function signupPage(input: {
  invite: string;
  boundEmail: string | null;
  values: { email?: string | undefined; username?: string | undefined };
  errors: FormErrors;
  providers?: readonly ProviderButton[];
}): string {
  const errors = input.errors;
  return page(
    'Sign up',
    html`<h1>Create your account</h1>
${errorBox(errors.form)}
<form method="post" action="/signup" class="stack">
${hidden('invite', input.invite)}
${field({
  name: 'email',
  label: 'Email address',
  type: 'email',
  value: input.boundEmail ?? input.values.email,
  readonly: input.boundEmail !== null,
  autocomplete: 'email',
  maxlength: LIMITS.email,
  help: input.boundEmail !== null ? 'This invite was issued for this address.' : '',
  error: fieldError(errors, 'email'),
})}
${field({
  name: 'username',
  label: 'Username',
  value: input.values.username,
  autocomplete: 'username',
  maxlength: 32,
  help: USERNAME_HELP,
  error: fieldError(errors, 'username'),
})}
${field({
  name: 'password',
  label: 'Password',
  type: 'password',
  autocomplete: 'new-password',
  help: PASSWORD_HELP,
  error: fieldError(errors, 'password'),
})}
<button type="submit">Create account</button>
</form>
${providerButtons(input.providers ?? [], 'Sign up', { invite: input.invite })}`,
  );
}

export function loginPage(input: {
  login?: string | undefined;
  next?: string | undefined;
  notice?: string | undefined;
  error?: string | undefined;
  providers?: readonly ProviderButton[];
}): string {
  return page(
    'Sign in',
    html`<h1>Sign in</h1>
${noticeBox(input.notice)}
${errorBox(input.error)}
<form method="post" action="/login" class="stack">
${input.next === undefined ? '' : hidden('next', input.next)}
${field({
  name: 'login',
  label: 'Username or email',
  value: input.login,
  autocomplete: 'username',
  maxlength: LIMITS.login,
})}
${field({ name: 'password', label: 'Password', type: 'password', autocomplete: 'current-password' })}
<button type="submit">Sign in</button>
</form>
${passkeySignInForm(input.next)}
${providerButtons(input.providers ?? [], 'Sign in', { next: input.next })}
<p><a href="/recover">Forgot your password?</a> · <a href="/status">Service status</a></p>`,
  );
}

export function recoverPage(input: {
  values?: { login?: string | undefined; email?: string | undefined };
  error?: string | undefined;
}): string {
  return page(
    'Recover your account',
    html`<h1>Recover your account</h1>
<p>Enter your username (or email) and the email address of your account. If they match an account, we send a
link to set a new password. The link works once and expires after 60 minutes.</p>
${errorBox(input.error)}
<form method="post" action="/recover" class="stack">
${field({
  name: 'login',
  label: 'Username or email',
  value: input.values?.login,
  autocomplete: 'username',
  maxlength: LIMITS.login,
})}
${field({
  name: 'email',
  label: 'Email address of the account',
  type: 'email',
  value: input.values?.email,
  autocomplete: 'email',
  maxlength: LIMITS.email,
})}
<button type="submit">Send recovery link</button>
</form>`,
  );
}

/** ACC-7: the one answer to every well-formed recovery request; only the reference differs. */
export function recoverySentPage(reference: string): string {
  return page(
    'Check your email',
    html`<h1>Check your email</h1>
<p>If an account matches, we have sent a link to its email address. The link works once and expires after 60
minutes.</p>
<p>Your support reference is <strong class="reference">${reference}</strong>. Quote it if you contact
support about this request.</p>
<p><a href="/login">Back to sign in</a></p>`,
  );
}

export function resetPasswordPage(
  input: { action: string; error?: string | undefined },
  frame?: Frame,
): string {
  return page(
    'Set a new password',
    html`<h1>Set a new password</h1>
<p>Setting a new password signs you out everywhere.</p>
<form method="post" action="${input.action}" class="stack">
${newPasswordField(input.error)}
<button type="submit">Set password</button>
</form>`,
    frame,
  );
}

/** GET of a verification link only asks: mail scanners fetch links, and a GET must not change state. */
export function confirmEmailPage(action: string, frame?: Frame): string {
  return page(
    'Confirm your email address',
    html`<h1>Confirm your email address</h1>
<p>Confirm that this address should become the email address of your account.</p>
<form method="post" action="${action}"><button type="submit">Confirm email address</button></form>`,
    frame,
  );
}

export function emailVerifiedPage(email: string, frame?: Frame): string {
  return page(
    'Email address verified',
    html`<h1>Email address verified</h1>
<p>Your account's email address is now <strong>${email}</strong>. You can sign in with it.</p>
<p><a href="/profile">Go to your profile</a></p>`,
    frame,
  );
}
