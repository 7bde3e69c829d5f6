import type { Agent, AgentDetail } from '../agents/service.ts';
import type { AgentTemplate, TemplateCredential } from '../agents/templates.ts';
import type { FormErrors } from './account-pages.ts';
import { time } from './dashboard-pages.ts';
import { errorBox, field, hidden, noticeBox, selectField } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';
import { type ListPager, pagerNav } from './list-pages.ts';

// The agent pages (AGT-1): the list, onboarding (a template picker, then the
// template's form), an agent with its credential metadata and settings, and
// the delete confirmation. Credential values travel one way only: they are
// typed into password fields and never rendered back, not even after a
// failed submission (VLT-2). A credential appears as its name and last 4.

/** What the onboarding and settings forms may show again after an error: never a credential. */
export interface AgentFormValues {
  readonly name?: string | undefined;
  readonly handle?: string | undefined;
  readonly description?: string | undefined;
  readonly supportAccess?: boolean | undefined;
  /** The allowlist textarea's text, one domain per line. */
  readonly egressAllowlist?: string | undefined;
}

export const SUPPORT_ACCESS_MEANING =
  "When on, the platform operator may open a shell inside this agent's sandbox to give support, and every such session is recorded in the audit log; when off, nothing in the sandbox accepts a support connection.";

/** Form field that carries credential `name` on the onboarding form. */
export const credentialFieldName = (name: string): string => `credential_${name}`;

/** Notices a redirect may name (?notice=…): attacker-controlled, so only these keys, as these texts. */
const NOTICES: Readonly<Record<string, string>> = {
  'agent-created':
    'The agent was onboarded. Its credentials are stored encrypted; only their last 4 characters are ever shown.',
  'agent-updated': 'The changes were saved.',
  'agent-deleted': 'The agent, its credentials and its provision record were deleted.',
  'credential-added': 'The credential was added.',
  'credential-rotated': 'The credential was replaced with the new value.',
  'credential-deleted': 'The credential was deleted.',
  'model-limits-set': 'The model limits were saved. The next call is held to them.',
  'card-published': "The agent's card is published: anyone who knows its handle can read it.",
  'card-unpublished': "The agent's card is no longer published: reading it now answers 404.",
  'listing-requested': 'The directory listing was requested: the operator reviews it.',
  'listing-withdrawn': 'The directory listing was withdrawn: the agent is not in the directory.',
  'instance-start': 'Starting the agent: its state below changes once the platform has started it.',
  'instance-stop': 'Stopping the agent.',
  'instance-restart': 'Restarting the agent.',
};

export function agentNoticeFrom(query: unknown): string | undefined {
  const notice = (query as { notice?: unknown } | undefined)?.notice;
  return typeof notice === 'string' && Object.hasOwn(NOTICES, notice) ? NOTICES[notice] : undefined;
}

function fieldError(errors: FormErrors, name: string): string | undefined {
  const fields = errors.fields ?? {};
  return Object.hasOwn(fields, name) ? fields[name] : undefined;
}

function groupMembers(template: AgentTemplate, group: string): string[] {
  return template.credentials.filter((c) => c.oneOf === group).map((c) => c.name);
}

/** A credential field's label: its name and whether it must be supplied. */
function credentialLabel(credential: TemplateCredential): string {
  if (credential.required) return `${credential.name} (required)`;
  return `${credential.name} (${credential.oneOf === undefined ? 'optional' : 'at least one of the group'})`;
}

/** The picker's one line on a template's credentials: each on its own, then each one_of group. */
function credentialSummary(template: AgentTemplate): string {
  if (template.credentials.length === 0) return 'Needs no credentials.';
  const single = template.credentials
    .filter((c) => c.oneOf === undefined)
    .map((c) => `${c.name} (${c.required ? 'required' : 'optional'})`);
  const groups = oneOfGroups(template).map((names) => `at least one of ${names.join(', ')}`);
  return `Credentials: ${[...single, ...groups].join('; ')}.`;
}

/** Everything a person needs to know to supply a credential: what it is, whether it is needed, its format. */
function credentialHelp(template: AgentTemplate, credential: TemplateCredential): string {
  const need = credential.required
    ? 'Required.'
    : credential.oneOf === undefined
      ? 'Optional.'
      : `Supply at least one of ${groupMembers(template, credential.oneOf).join(', ')}.`;
  // The pattern's words only: a regular expression means nothing to most readers.
  const format =
    credential.patternDescription === undefined ? '' : ` Expected format: ${credential.patternDescription}.`;
  return `${credential.description} ${need}${format}`;
}

function oneOfGroups(template: AgentTemplate): string[][] {
  const groups = new Set(template.credentials.flatMap((c) => (c.oneOf === undefined ? [] : [c.oneOf])));
  return [...groups].map((group) => groupMembers(template, group));
}

function supportAccessField(checked: boolean, error: string | undefined): Html {
  return html`<div class="field check${error ? ' invalid' : ''}">
<input id="f-support_access" name="support_access" type="checkbox" value="on"${checked ? html` checked` : ''} aria-describedby="f-support_access-help">
<label for="f-support_access">Allow support access</label>
<p class="help" id="f-support_access-help">${SUPPORT_ACCESS_MEANING}</p>
${error ? html`<p class="error">${error}</p>` : ''}
</div>`;
}

const onOff = (on: boolean): string => (on ? 'on' : 'off');

export function agentsListPage(
  frame: Frame,
  input: {
    agents: readonly Agent[];
    pager: ListPager;
    templateName: (id: string) => string;
    /** The agent's instance state as one line. */
    stateOf: (id: string) => string;
    notice?: string | undefined;
  },
): string {
  return page(
    'Agents',
    html`<h1>Agents</h1>
${noticeBox(input.notice)}
<p><a href="/dashboard/agents/new">Onboard an agent</a></p>
${
  input.agents.length === 0
    ? html`<p class="muted">No agents yet.</p>`
    : html`<table><thead><tr><th>Name</th><th>Handle</th><th>Template</th><th>State</th><th>Support access</th><th>Created</th></tr></thead><tbody>${input.agents.map(
        (agent) => html`<tr><td><a href="/dashboard/agents/${agent.id}">${agent.name}</a></td>
<td><code>${agent.handle}</code></td><td>${input.templateName(agent.template)}</td><td>${input.stateOf(agent.id)}</td>
<td>${onOff(agent.support_access)}</td><td>${time(agent.created_at)}</td></tr>`,
      )}</tbody></table>`
}
${pagerNav(input.pager, 'Pages of agents')}`,
    frame,
  );
}

/** Step one of onboarding: a GET form, so choosing a template works without JavaScript. */
export function templatePickerPage(
  frame: Frame,
  input: { templates: readonly AgentTemplate[]; error?: string | undefined },
): string {
  return page(
    'Onboard an agent',
    html`<h1>Onboard an agent</h1>
${errorBox(input.error)}
${
  input.templates.length === 0
    ? html`<p class="muted">No agent templates are installed. Ask the operator to add one.</p>`
    : html`<form method="get" action="/dashboard/agents/new" class="stack">
<fieldset><legend>Choose a template</legend>
${input.templates.map(
  (template, index) => html`<div class="field check">
<input id="t-${template.id}" name="template" type="radio" value="${template.id}"${index === 0 ? html` checked` : ''} required aria-describedby="t-${template.id}-help">
<label for="t-${template.id}">${template.name}</label>
<p class="help" id="t-${template.id}-help">${template.description} ${credentialSummary(template)}</p>
</div>`,
)}
</fieldset>
<button type="submit">Continue</button>
</form>`
}`,
    frame,
  );
}

/** Step two: the chosen template's form. Credential fields are password inputs that are never filled in. */
export function onboardingPage(
  frame: Frame,
  input: { template: AgentTemplate; values?: AgentFormValues; errors?: FormErrors },
): string {
  const { template } = input;
  const values = input.values ?? {};
  const errors = input.errors ?? {};
  const groups = oneOfGroups(template);
  return page(
    `Onboard an agent: ${template.name}`,
    html`<h1>Onboard an agent</h1>
<p>Template: <strong>${template.name}</strong> (<code>${template.id}</code>). ${template.description}
<a href="/dashboard/agents/new">Choose another template</a></p>
${errorBox(errors.form)}
<form method="post" action="/dashboard/agents" class="stack">
${hidden('template', template.id)}
${field({ name: 'name', label: 'Name', value: values.name, maxlength: 100, autocomplete: 'off', error: fieldError(errors, 'name') })}
${field({
  name: 'handle',
  label: 'Handle',
  value: values.handle,
  maxlength: 40,
  autocomplete: 'off',
  help: 'Names the agent across the whole platform (other users reach it by this name): 3 to 40 characters of a-z, 0-9 and "-". It cannot be changed later.',
  error: fieldError(errors, 'handle'),
})}
${field({
  name: 'description',
  label: 'Description (optional)',
  value: values.description,
  maxlength: 1000,
  required: false,
  autocomplete: 'off',
  error: fieldError(errors, 'description'),
})}
<fieldset><legend>Credentials</legend>
${
  template.credentials.length === 0
    ? html`<p class="help">This template needs no credentials.</p>`
    : html`<p class="help">Each value is stored encrypted and is write-only: after this form, only its last 4 characters are ever shown. Leave an optional one empty to skip it.</p>`
}
${groups.map((names) => html`<p class="help">This template needs at least one of ${names.join(', ')}.</p>`)}
${errorBox(fieldError(errors, 'credentials'))}
${template.credentials.map((credential) =>
  field({
    name: credentialFieldName(credential.name),
    label: credentialLabel(credential),
    type: 'password',
    required: credential.required,
    autocomplete: 'new-password',
    help: credentialHelp(template, credential),
    error: fieldError(errors, `credentials/${credential.name}`),
  }),
)}
</fieldset>
${supportAccessField(values.supportAccess ?? true, fieldError(errors, 'support_access'))}
<button type="submit">Onboard agent</button>
</form>`,
    frame,
  );
}

function allowlistField(text: string, error: string | undefined): Html {
  return html`<div class="field${error === undefined ? '' : ' invalid'}">
<label for="f-egress_allowlist">Allowed destinations (optional)</label>
<textarea id="f-egress_allowlist" name="egress_allowlist" rows="4" autocomplete="off" spellcheck="false" aria-describedby="f-egress_allowlist-help"${error === undefined ? '' : html` aria-invalid="true"`}>${text}</textarea>
<p class="help" id="f-egress_allowlist-help">One domain per line (<code>api.github.com</code>, or <code>*.github.com</code> for its subdomains). Empty: the agent may reach any public destination. Private and internal addresses stay refused either way. Takes effect at the next start.</p>
${error === undefined ? '' : html`<p class="error" role="alert">${error}</p>`}
</div>`;
}

export interface AgentPageInput {
  readonly agent: AgentDetail;
  /** The agent's template; undefined when the operator has removed it. */
  readonly template: AgentTemplate | undefined;
  readonly notice?: string | undefined;
  /** The settings form, shown again after an error. */
  readonly settings?: { values: AgentFormValues; errors: FormErrors } | undefined;
  /** The add-or-replace form, shown again after an error (the chosen name only: never the value). */
  readonly credential?: { name: string | undefined; errors: FormErrors } | undefined;
  /** Why a credential could not be deleted. */
  readonly credentialsError?: string | undefined;
  /** The instance: its state, address, output and connections (instance-section.ts). */
  readonly instance?: Html | undefined;
  /** Its model calls and limits, for a template that uses the model gateway (model-section.ts). */
  readonly models?: Html | undefined;
  /** Whether its A2A card is published, and the switch (card-section.ts). */
  readonly card?: Html | undefined;
  /** What the reader may change (roles.ts): without a right, its forms and links are not drawn. */
  readonly may?: { readonly manage: boolean; readonly credentials: boolean } | undefined;
}

function credentialRows(input: AgentPageInput): Html {
  const { agent, template } = input;
  const declared = template?.credentials ?? [];
  const stored = new Map(agent.credentials.map((listing) => [listing.name, listing]));
  const names = [...declared.map((c) => c.name), ...agent.credentials.map((c) => c.name)];
  return html`${[...new Set(names)].map((name) => {
    const credential = declared.find((c) => c.name === name);
    const listing = stored.get(name);
    const about =
      credential === undefined || template === undefined ? '' : credentialHelp(template, credential);
    return html`<tr><td><code>${name}</code></td><td class="help">${about}</td>
<td>${listing === undefined ? html`<span class="muted">not set</span>` : listing.last4 === null ? html`<span class="muted" title="Too short to show any of it">—</span>` : html`<code>…${listing.last4}</code>`}</td>
<td>${listing === undefined ? time(null) : time(listing.created_at)}</td><td>${listing === undefined ? time(null) : time(listing.updated_at)}</td>
<td>${
      listing === undefined || template === undefined || input.may?.credentials === false
        ? ''
        : html`<a href="/dashboard/agents/${agent.id}/credentials/${encodeURIComponent(name)}/delete" aria-label="Delete the credential ${name}">Delete…</a>`
    }</td></tr>`;
  })}`;
}

function credentialForm(input: AgentPageInput, template: AgentTemplate): Html {
  const errors = input.credential?.errors ?? {};
  const stored = new Map(input.agent.credentials.map((listing) => [listing.name, listing]));
  const state = (name: string) => {
    const listing = stored.get(name);
    if (listing === undefined) return 'not set';
    return listing.last4 === null ? 'set' : `set, ends …${listing.last4}`;
  };
  return html`<h3>Add or replace a credential</h3>
${errorBox(errors.form)}
<form method="post" action="/dashboard/agents/${input.agent.id}/credentials" class="stack">
${selectField({
  name: 'name',
  label: 'Credential',
  choices: template.credentials.map((c) => [c.name, `${c.name} (${state(c.name)})`] as const),
  selected: input.credential?.name,
  error: fieldError(errors, 'name'),
})}
${field({
  name: 'value',
  label: 'New value',
  type: 'password',
  autocomplete: 'new-password',
  help: "Replaces the credential's current value, if it has one; the agent's other credentials are not touched. Write-only: only its last 4 characters are shown afterwards.",
  error: fieldError(errors, 'value'),
})}
<button type="submit">Save credential</button>
</form>`;
}

function provisionFacts(agent: AgentDetail): Html {
  const record = agent.provision;
  if (record === null) return html`<p class="muted">No provision record.</p>`;
  const provided = Object.entries(record.credentials_provided);
  return html`<dl class="facts">
<dt>Template</dt><dd><code>${record.template}</code></dd>
<dt>Support access</dt><dd>${onOff(record.support_access)}</dd>
<dt>Credentials provided</dt><dd>${
    provided.length === 0
      ? html`<span class="muted">none declared</span>`
      : html`<ul class="plain">${provided.map(
          ([name, given]) => html`<li><code>${name}</code>: ${given ? 'yes' : 'no'}</li>`,
        )}</ul>`
  }</dd>
<dt>Requested</dt><dd>${time(record.requested_at)}</dd>
</dl>`;
}

export function agentPage(frame: Frame, input: AgentPageInput): string {
  const { agent, template } = input;
  const settings = input.settings ?? {
    values: {
      name: agent.name,
      description: agent.description,
      supportAccess: agent.support_access,
      egressAllowlist: (agent.egress_allowlist ?? []).join('\n'),
    },
    errors: {},
  };
  const errors = settings.errors;
  const may = input.may ?? { manage: true, credentials: true };
  return page(
    agent.name,
    html`<h1>${agent.name}</h1>
${noticeBox(input.notice)}
<dl class="facts">
<dt>Handle</dt><dd><code>${agent.handle}</code></dd>
<dt>Template</dt><dd>${template?.name ?? html`<span class="warning">no longer installed</span>`} (<code>${agent.template}</code>)</dd>
<dt>Description</dt><dd>${agent.description === '' ? html`<span class="muted">—</span>` : agent.description}</dd>
<dt>Support access</dt><dd>${onOff(agent.support_access)}</dd>
<dt>Created</dt><dd>${time(agent.created_at)}</dd>
<dt>Updated</dt><dd>${time(agent.updated_at)}</dd>
</dl>
${input.instance ?? ''}
${input.models ?? ''}
${input.card ?? ''}
<h2>Credentials</h2>
<p>Values are stored encrypted and are write-only: Enclave shows only their last 4 characters (nothing of a value under 16 characters).</p>
${errorBox(input.credentialsError)}
<table><thead><tr><th>Credential</th><th>About</th><th>Last 4</th><th>Added</th><th>Updated</th><th><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>${credentialRows(input)}</tbody></table>
${
  !may.credentials
    ? html`${errorBox(input.credential?.errors.form)}<p class="muted">Its creator, the tenant’s admins and owners set its credentials.</p>`
    : template === undefined
      ? html`<p class="warning">This agent's template is no longer installed, so its credentials cannot be changed. Ask the operator.</p>`
      : template.credentials.length === 0
        ? ''
        : credentialForm(input, template)
}
${
  may.manage
    ? settingsSection(agent.id, settings.values, errors)
    : html`<h2>Settings</h2>
<p class="muted">Its creator, the tenant’s admins and owners change its settings or delete it.</p>`
}
<h2>Provision record</h2>
<p class="help">What was asked for when the agent was onboarded: for each credential, only whether it was provided.</p>
${provisionFacts(agent)}
${
  may.manage
    ? html`<h2>Delete</h2>
<p><a href="/dashboard/agents/${agent.id}/delete">Delete this agent…</a></p>`
    : ''
}`,
    frame,
  );
}

function settingsSection(agentId: string, values: AgentFormValues, errors: FormErrors): Html {
  return html`<h2>Settings</h2>
${errorBox(errors.form)}
<form method="post" action="/dashboard/agents/${agentId}" class="stack">
${field({ name: 'name', id: 'f-agent-name', label: 'Name', value: values.name, maxlength: 100, autocomplete: 'off', error: fieldError(errors, 'name') })}
${field({
  name: 'description',
  label: 'Description (optional)',
  value: values.description,
  maxlength: 1000,
  required: false,
  autocomplete: 'off',
  error: fieldError(errors, 'description'),
})}
${supportAccessField(values.supportAccess ?? false, fieldError(errors, 'support_access'))}
${allowlistField(values.egressAllowlist ?? '', fieldError(errors, 'egress_allowlist'))}
<button type="submit">Save changes</button>
</form>`;
}

export function deleteAgentPage(frame: Frame, agent: AgentDetail): string {
  const count = agent.credentials.length;
  return page(
    `Delete ${agent.name}`,
    html`<h1>Delete ${agent.name}?</h1>
<p class="warning">This deletes the agent <code>${agent.handle}</code>, its ${count} credential${count === 1 ? '' : 's'} and its provision record, and cannot be undone. The audit log keeps the record that it existed and was deleted.</p>
<p>Its handle becomes free again: anyone on the platform may then take it.</p>
<form method="post" action="/dashboard/agents/${agent.id}/delete" class="stack">
<button type="submit" class="danger">Delete agent</button>
</form>
<p><a href="/dashboard/agents/${agent.id}">Cancel</a></p>`,
    frame,
  );
}
