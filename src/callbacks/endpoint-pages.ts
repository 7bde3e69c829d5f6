import { COPY_SCRIPT, copyButton } from '../web/copy.ts';
import { postButton, time } from '../web/dashboard-pages.ts';
import { errorBox, field, noticeBox } from '../web/forms.ts';
import { type Frame, type Html, html, page } from '../web/html.ts';
import { type ListPager, pagerNav } from '../web/list-pages.ts';
import { MAX_CALLBACK_URL_LENGTH } from './destination.ts';
import { CALLBACK_EVENT_TYPES, type CallbackEndpoint, type CallbackEventType } from './endpoints.ts';

// The callback endpoints pages (RLY-7): /dashboard/webhooks lists the
// endpoints the principal manages with the form that registers one;
// /dashboard/webhooks/:id shows one with its delivery log (placed by the
// routes, delivery-pages.ts) and its actions. A new or rotated secret is
// shown once (secret flash, post/redirect/get). Every value is escaped by html``.

/** The side an endpoint listens on, as a person reads it: the agent's handle, or the connection's target. */
export type SideNames = ReadonlyMap<string, string>;

/** A subject the principal may register an endpoint for: [id, label]. */
export type Choice = readonly [id: string, label: string];

export interface EndpointFormValues {
  readonly url?: string | undefined;
  readonly description?: string | undefined;
  readonly eventTypes?: readonly string[] | undefined;
  readonly agentId?: string | undefined;
  readonly connectionId?: string | undefined;
  readonly signV1a?: boolean | undefined;
}

/** A problem to show: by its field when it has one, else above the form. */
export interface FormProblemShown {
  readonly field: string | undefined;
  readonly message: string;
}

/** The secret just made (on create or rotate): shown on one page view only. */
export interface ShownOnce {
  readonly id: string;
  readonly secret: string;
  readonly publicKey: string | null;
}

/** The form field name of an event's checkbox (a form carries each key once). */
export const eventField = (type: CallbackEventType) => `event.${type}`;

const EVENT_HELP: Readonly<Record<CallbackEventType, string>> = {
  'thread.message_received': 'a caller’s message reached the agent',
  'thread.agent_replied': 'the agent (or its owner) replied',
  'thread.closed': 'the thread was closed',
  'connection.revoked': 'the connection’s grant was revoked',
};

function side(endpoint: CallbackEndpoint, names: SideNames): Html {
  if (endpoint.agent_id !== null) {
    return html`agent <code>${names.get(endpoint.agent_id) ?? endpoint.agent_id}</code>`;
  }
  const id = endpoint.connection_id ?? '';
  return html`caller, to <code>${names.get(id) ?? id}</code>`;
}

function state(endpoint: CallbackEndpoint): Html {
  return endpoint.state === 'enabled'
    ? html`enabled`
    : html`<strong>disabled</strong>${endpoint.disabled_reason === null ? '' : html`: ${endpoint.disabled_reason}`}`;
}

const problemFor = (problem: FormProblemShown | undefined, name: string) =>
  problem?.field === name ? problem.message : undefined;

function eventBoxes(checked: readonly string[], error: string | undefined): Html {
  return html`<fieldset class="field${error ? ' invalid' : ''}"${error ? html` aria-describedby="f-events-error"` : ''}>
<legend>Events</legend>
${CALLBACK_EVENT_TYPES.map(
  (type) =>
    html`<label><input type="checkbox" name="${eventField(type)}" value="on"${checked.includes(type) ? html` checked` : ''}> <code>${type}</code> — ${EVENT_HELP[type]}</label>`,
)}
${error ? html`<p class="error" id="f-events-error">${error}</p>` : ''}
</fieldset>`;
}

function subjectSelect(
  name: string,
  label: string,
  choices: readonly Choice[],
  selected: string | undefined,
  error: string | undefined,
): Html {
  const id = `f-${name}`;
  return html`<div class="field${error ? ' invalid' : ''}">
<label for="${id}">${label}</label>
<select id="${id}" name="${name}"${error ? html` aria-describedby="${id}-error" aria-invalid="true"` : ''}>
<option value="">— none —</option>
${choices.map(([value, text]) => html`<option value="${value}"${value === selected ? html` selected` : ''}>${text}</option>`)}
</select>
${error ? html`<p class="error" id="${id}-error">${error}</p>` : ''}
</div>`;
}

function secretBox(shown: ShownOnce | undefined): Html {
  if (shown === undefined) return html``;
  return html`<section class="secret" aria-labelledby="signing-secret">
<h2 id="signing-secret">Signing secret</h2>
<p class="warning">Copy the secret now. This is the only time it is shown.</p>
<p><code class="token" id="endpoint-secret">${shown.secret}</code></p>
<p>${copyButton('endpoint-secret', 'the secret')}</p>
${
  shown.publicKey === null
    ? ''
    : html`<p>The v1a (Ed25519) signatures verify with this public key, also shown on the endpoint’s page:</p>
<p><code class="token">${shown.publicKey}</code></p>`
}
</section>
${COPY_SCRIPT}`;
}

export interface EndpointsPageInput {
  readonly endpoints: readonly CallbackEndpoint[];
  readonly pager: ListPager;
  readonly names: SideNames;
  readonly agents: readonly Choice[];
  readonly connections: readonly Choice[];
  readonly values?: EndpointFormValues | undefined;
  readonly problem?: FormProblemShown | undefined;
  readonly notice?: string | undefined;
}

export function endpointsPage(frame: Frame, input: EndpointsPageInput): string {
  const values = input.values ?? {};
  const problem = input.problem;
  return page(
    'Webhooks',
    html`<h1>Webhooks</h1>
<p class="help">Callback URLs that receive relay thread events, signed as Standard Webhooks specifies: on an agent of yours (every thread with it) or on an outgoing connection of yours (the threads you open over it).</p>
${noticeBox(input.notice)}
${
  input.endpoints.length === 0
    ? html`<p class="muted">No webhook endpoints yet.</p>`
    : html`<table><thead><tr><th>URL</th><th>Side</th><th>Events</th><th>State</th></tr></thead><tbody>${input.endpoints.map(
        (endpoint) =>
          html`<tr><td><a href="/dashboard/webhooks/${endpoint.id}"><code>${endpoint.url}</code></a>${
            endpoint.description === '' ? '' : html`<br><span class="muted">${endpoint.description}</span>`
          }</td><td>${side(endpoint, input.names)}</td><td>${endpoint.event_types.join(', ')}</td><td>${state(endpoint)}</td></tr>`,
      )}</tbody></table>`
}
${pagerNav(input.pager, 'Webhook endpoint pages')}
<h2 id="new-endpoint">New endpoint</h2>
${errorBox(problem !== undefined && problem.field === undefined ? problem.message : problem === undefined ? undefined : 'Check the field marked below.')}
<form method="post" action="/dashboard/webhooks" class="stack" aria-labelledby="new-endpoint">
${field({ name: 'url', label: 'URL', value: values.url, error: problemFor(problem, 'url'), maxlength: MAX_CALLBACK_URL_LENGTH, help: 'https:// (http:// only in development); private and loopback addresses are refused' })}
${eventBoxes(values.eventTypes ?? [], problemFor(problem, 'event_types'))}
${subjectSelect('agent_id', 'Agent (owner side)', input.agents, values.agentId, problemFor(problem, 'agent_id'))}
${subjectSelect('connection_id', 'Or an outgoing connection (caller side)', input.connections, values.connectionId, problemFor(problem, 'connection_id'))}
${field({ name: 'description', label: 'Description', value: values.description, required: false, maxlength: 200, error: problemFor(problem, 'description') })}
<label><input type="checkbox" name="sign_v1a" value="on"${values.signV1a ? html` checked` : ''}> Also sign with Ed25519 (v1a)</label>
<button type="submit">Create endpoint</button>
</form>`,
    frame,
  );
}

export interface EndpointPageInput {
  readonly endpoint: CallbackEndpoint;
  readonly names: SideNames;
  readonly deliveryLog: Html;
  /** The delivery shown with its attempts (?delivery=): its replay button. */
  readonly deliveryId?: string | undefined;
  readonly shown?: ShownOnce | undefined;
  readonly values?: EndpointFormValues | undefined;
  readonly problem?: FormProblemShown | undefined;
  readonly notice?: string | undefined;
}

export function endpointPage(frame: Frame, input: EndpointPageInput): string {
  const { endpoint, problem } = input;
  const base = `/dashboard/webhooks/${endpoint.id}`;
  const values = input.values ?? {};
  return page(
    'Webhook endpoint',
    html`<p><a href="/dashboard/webhooks">← Webhooks</a></p>
<h1>Webhook endpoint</h1>
${noticeBox(input.notice)}
${secretBox(input.shown?.id === endpoint.id ? input.shown : undefined)}
<dl>
<dt>URL</dt><dd><code>${endpoint.url}</code></dd>
<dt>Side</dt><dd>${side(endpoint, input.names)}</dd>
<dt>Events</dt><dd>${endpoint.event_types.join(', ')}</dd>
<dt>State</dt><dd>${state(endpoint)}${endpoint.consecutive_failures > 0 ? html` (${endpoint.consecutive_failures} failed in a row)` : ''}</dd>
${endpoint.description === '' ? '' : html`<dt>Description</dt><dd>${endpoint.description}</dd>`}
${endpoint.public_key === null ? '' : html`<dt>v1a public key</dt><dd><code class="token">${endpoint.public_key}</code></dd>`}
${endpoint.previous_secret_until === null ? '' : html`<dt>Previous secret signs until</dt><dd>${time(endpoint.previous_secret_until)}</dd>`}
<dt>Created</dt><dd>${time(endpoint.created_at)}</dd>
</dl>
<p class="actions">${endpoint.state === 'disabled' ? postButton(`${base}/enable`, 'Enable') : ''}<a href="${base}/rotate">Rotate secret</a> <a href="${base}/delete">Delete</a></p>
${input.deliveryLog}
${input.deliveryId === undefined ? '' : postButton(`${base}/deliveries/${input.deliveryId}/replay`, 'Replay this delivery')}
<h2 id="replay-failed">Replay failed deliveries</h2>
<form method="post" action="${base}/replay-failed" class="stack" aria-labelledby="replay-failed">
<div class="field${problemFor(problem, 'since') ? ' invalid' : ''}">
<label for="f-since">Failed since (UTC)</label>
<input id="f-since" name="since" type="datetime-local" required${problemFor(problem, 'since') ? html` aria-invalid="true" aria-describedby="f-since-error"` : ''}>
${problemFor(problem, 'since') ? html`<p class="error" id="f-since-error">${problemFor(problem, 'since')}</p>` : ''}
</div>
<button type="submit">Replay failed</button>
</form>
<h2 id="edit-endpoint">Change</h2>
${errorBox(problem !== undefined && problem.field === undefined ? problem.message : undefined)}
<form method="post" action="${base}" class="stack" aria-labelledby="edit-endpoint">
${field({ name: 'url', label: 'URL', value: values.url ?? endpoint.url, error: problemFor(problem, 'url'), maxlength: MAX_CALLBACK_URL_LENGTH })}
${eventBoxes(values.eventTypes ?? endpoint.event_types, problemFor(problem, 'event_types'))}
${field({ name: 'description', label: 'Description', value: values.description ?? endpoint.description, required: false, maxlength: 200, error: problemFor(problem, 'description') })}
<button type="submit">Save</button>
</form>`,
    frame,
  );
}
