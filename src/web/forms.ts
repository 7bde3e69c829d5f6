import type { FastifyReply } from 'fastify';
import { TEXT_KIND_KEYWORD } from '../http/text-input.ts';
import { type Html, html } from './html.ts';

// Building blocks of the server-rendered forms: labelled fields with their
// help and error text, a message box, fixed notices, and the translation of
// a schema failure into a sentence a person can act on. Nothing here echoes
// a submitted value except through a field's (escaped) value attribute, and
// password fields never get one.

export interface FieldOptions {
  readonly name: string;
  /** Element id, when one page has two fields of the same name. */
  readonly id?: string;
  readonly label: string;
  readonly type?: 'text' | 'email' | 'password' | 'date' | 'hidden';
  readonly value?: string | undefined;
  readonly error?: string | undefined;
  readonly help?: string;
  readonly required?: boolean;
  readonly readonly?: boolean;
  readonly autocomplete?: string;
  readonly maxlength?: number;
}

export function field(options: FieldOptions): Html {
  const id = options.id ?? `f-${options.name}`;
  const type = options.type ?? 'text';
  // A password is never written back into a form.
  const value = type === 'password' ? undefined : options.value;
  const describedBy = [options.help ? `${id}-help` : '', options.error ? `${id}-error` : '']
    .filter(Boolean)
    .join(' ');
  return html`<div class="field${options.error ? ' invalid' : ''}">
<label for="${id}">${options.label}</label>
<input id="${id}" name="${options.name}" type="${type}"${value === undefined ? '' : html` value="${value}"`}${
    options.required === false ? '' : html` required`
  }${options.readonly ? html` readonly` : ''}${
    options.autocomplete ? html` autocomplete="${options.autocomplete}"` : ''
  }${options.maxlength ? html` maxlength="${options.maxlength}"` : ''}${
    describedBy ? html` aria-describedby="${describedBy}"` : ''
  }${options.error ? html` aria-invalid="true"` : ''}>
${options.help ? html`<p class="help" id="${id}-help">${options.help}</p>` : ''}
${options.error ? html`<p class="error" id="${id}-error">${options.error}</p>` : ''}
</div>`;
}

export function hidden(name: string, value: string): Html {
  return html`<input type="hidden" name="${name}" value="${value}">`;
}

export function selectField(options: {
  name: string;
  label: string;
  choices: readonly (readonly [value: string, text: string])[];
  selected?: string | undefined;
  error?: string | undefined;
}): Html {
  const id = `f-${options.name}`;
  return html`<div class="field${options.error ? ' invalid' : ''}">
<label for="${id}">${options.label}</label>
<select id="${id}" name="${options.name}">${options.choices.map(
    ([value, text]) =>
      html`<option value="${value}"${value === options.selected ? html` selected` : ''}>${text}</option>`,
  )}</select>
${options.error ? html`<p class="error" id="${id}-error">${options.error}</p>` : ''}
</div>`;
}

/** A form-level message (role=alert so screen readers announce it). */
export function errorBox(message: string | undefined): Html {
  return message === undefined ? html`` : html`<p class="error" role="alert">${message}</p>`;
}

export function noticeBox(message: string | undefined): Html {
  return message === undefined ? html`` : html`<p class="notice" role="status">${message}</p>`;
}

/**
 * Notices a redirect may name (?notice=…). The query is attacker-controlled:
 * only these keys are shown, as these fixed texts.
 */
const NOTICES = {
  'signed-out': 'You have signed out.',
  'signed-out-everywhere': 'You have signed out on every device.',
  'password-reset':
    'Your password was reset and every session was signed out. Sign in with the new password.',
  'password-changed': 'Your password was changed. Your other sessions were signed out.',
  'email-pending':
    'We sent a confirmation link to the new address. The change takes effect when you open it; the link expires in 60 minutes.',
  'verification-sent':
    'We sent a confirmation link to your email address. Open it to confirm the address; the link expires in 60 minutes.',
  'session-revoked': 'The session was signed out.',
  'token-revoked': 'The token was revoked.',
  'invite-revoked': 'The invite was revoked.',
  'email-code-on': 'Sign-in now asks for a code sent to your email address after your password.',
  'email-code-off': 'Codes by email are turned off.',
  'second-factor-required':
    'Your tenant requires a second step at sign-in. Set one up below to reach the rest of Enclave.',
  'passkey-added': 'The passkey was added. You can sign in with it.',
  'passkey-renamed': 'The passkey was renamed.',
  'passkey-removed': 'The passkey was removed.',
  'identity-linked': 'The identity was linked: you can sign in with it.',
  'identity-unlinked': 'The identity was unlinked: it no longer signs in to this account.',
} as const;

export type NoticeKey = keyof typeof NOTICES;

export function noticeFrom(query: unknown): string | undefined {
  const notice = (query as { notice?: unknown } | undefined)?.notice;
  return typeof notice === 'string' && Object.hasOwn(NOTICES, notice)
    ? NOTICES[notice as NoticeKey]
    : undefined;
}

/** A string field of a body that may have failed validation; anything else counts as absent. */
export function bodyText(body: unknown, name: string, max = 254): string | undefined {
  if (typeof body !== 'object' || body === null || !Object.hasOwn(body, name)) return undefined;
  const value = (body as Record<string, unknown>)[name];
  return typeof value === 'string' && value.length <= max ? value : undefined;
}

interface SchemaIssue {
  readonly keyword: string;
  readonly instancePath: string;
  readonly params: Record<string, unknown>;
  readonly message?: string | undefined;
}

export interface FormProblem {
  readonly message: string;
  readonly field: string | undefined;
}

/** One schema issue in words, or undefined when it names no field the form has. */
function issueProblem(issue: SchemaIssue, labels: Readonly<Record<string, string>>): FormProblem | undefined {
  const missing = issue.params.missingProperty;
  const name = typeof missing === 'string' ? missing : issue.instancePath.slice(1);
  const label = Object.hasOwn(labels, name) ? labels[name] : undefined;
  if (label === undefined) return undefined;
  if (issue.keyword === 'required') return { message: `${label} is required.`, field: name };
  if (issue.keyword === 'maxLength') return { message: `${label} is too long.`, field: name };
  if (issue.keyword === 'minLength') return { message: `${label} is required.`, field: name };
  // The text rule's message is written for people ("must be one line without control characters …").
  if (issue.keyword === TEXT_KIND_KEYWORD && issue.message !== undefined) {
    return { message: `${label} ${issue.message}.`, field: name };
  }
  // Anything else (a pattern, a choice not offered) is named, never quoted: ajv's own text shows the rule's source.
  return { message: `${label} is not valid.`, field: name };
}

const UNREADABLE: FormProblem = { message: 'The form could not be read.', field: undefined };

/**
 * What a form's schema failure means, in words: every field that failed, each
 * once (its first rule broken), in the schema's order. ajv's issues describe
 * the rule broken (unknown field, too long, missing), never the submitted value.
 */
export function formProblems(
  error: { validation?: readonly SchemaIssue[] } | undefined,
  labels: Readonly<Record<string, string>>,
): FormProblem[] {
  const issues = error?.validation ?? [];
  if (issues.some((issue) => issue.keyword === 'additionalProperties')) {
    return [{ message: 'The form contained a field this page does not accept.', field: undefined }];
  }
  const byField = new Map<string, FormProblem>();
  for (const issue of issues) {
    const problem = issueProblem(issue, labels);
    if (problem === undefined) return [UNREADABLE];
    if (problem.field !== undefined && !byField.has(problem.field)) byField.set(problem.field, problem);
  }
  return byField.size === 0 ? [UNREADABLE] : [...byField.values()];
}

/** The first of formProblems, for forms that show one message. */
export function formProblem(
  error: { validation?: readonly SchemaIssue[] } | undefined,
  labels: Readonly<Record<string, string>>,
): FormProblem {
  return formProblems(error, labels)[0] ?? UNREADABLE;
}

/** Sends a page. Pages are personal or carry one-time values: no cache keeps them (nor the back button after sign-out). */
export function sendPage(reply: FastifyReply, status: number, document: string): FastifyReply {
  return reply
    .status(status)
    .header('cache-control', 'no-store')
    .type('text/html; charset=utf-8')
    .send(document);
}
