import type { Connection } from '../relay/connections.ts';
import type { FormErrors } from './account-pages.ts';
import { postButton, time } from './dashboard-pages.ts';
import { errorBox, field, noticeBox, selectField } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';
import { type ListPager, pagerNav } from './list-pages.ts';

// /dashboard/connections (RLY-2): requests to reach this tenant's agents
// (incoming), with approve, deny and revoke, and this tenant's own requests
// (outgoing), with the form to make one. Revoking asks first, on a page of
// its own; every action is a POST form and works without JavaScript.

const NOTICES: Readonly<Record<string, string>> = {
  requested: 'Your request was sent. The agent’s owner sees it and approves or denies it.',
  approved: 'The connection was approved. The requester can now claim its relay token, once.',
  denied: 'The request was denied.',
  revoked: 'The connection was revoked: its relay token no longer works.',
};

/** The notice a redirect named (?notice=…), from the fixed list only: the query is attacker-controlled. */
export function connectionsNoticeFrom(query: unknown): string | undefined {
  const notice = (query as { notice?: unknown } | undefined)?.notice;
  return typeof notice === 'string' && Object.hasOwn(NOTICES, notice) ? NOTICES[notice] : undefined;
}

export interface ConnectionFormValues {
  readonly handle?: string | undefined;
  readonly agent_id?: string | undefined;
  readonly message?: string | undefined;
}

export interface ConnectionsPageInput {
  readonly incoming: readonly Connection[];
  readonly incomingPager: ListPager;
  readonly outgoing: readonly Connection[];
  readonly outgoingPager: ListPager;
  /** The agents this user may act for: [id, handle]. */
  readonly agents: readonly (readonly [string, string])[];
  readonly values?: ConnectionFormValues;
  readonly errors?: FormErrors;
  readonly notice?: string | undefined;
  readonly error?: string | undefined;
}

function requester(connection: Connection): Html {
  return connection.requester_handle === null
    ? html`<span class="muted">a person</span>`
    : html`<code>${connection.requester_handle}</code>`;
}

function incomingActions(connection: Connection): Html {
  const base = `/dashboard/connections/${connection.id}`;
  const who = connection.requester_handle ?? 'a person';
  return html`${
    connection.state === 'pending'
      ? html`${postButton(`${base}/approve`, 'Approve', `Approve ${who} → ${connection.target_handle}`)}${postButton(
          `${base}/deny`,
          'Deny',
          `Deny ${who} → ${connection.target_handle}`,
        )}`
      : ''
  }${
    connection.state === 'pending' || connection.state === 'approved'
      ? html`<a href="${base}/revoke" aria-label="Revoke ${who} → ${connection.target_handle}">Revoke</a>`
      : ''
  }${
    (connection.state === 'approved' || connection.state === 'revoked') && connection.agent_id !== null
      ? html` <a href="/dashboard/threads?agent_id=${connection.agent_id}" aria-label="Threads with ${connection.target_handle}">Threads</a>`
      : ''
  }`;
}

function table(rows: readonly Connection[], incoming: boolean): Html {
  if (rows.length === 0) return html`<p class="muted">None.</p>`;
  return html`<table>
<thead><tr><th>From</th><th>To</th><th>Message</th><th>State</th><th>Asked</th><th></th></tr></thead>
<tbody>${rows.map(
    (connection) => html`<tr>
<td>${requester(connection)}</td>
<td><code>${connection.target_handle}</code></td>
<td>${connection.message}</td>
<td>${connection.state}${
      !incoming && connection.state === 'approved'
        ? connection.token_claimed
          ? ' (token claimed)'
          : ' (claim the relay token: POST /api/v1/connections/{id}/relay-token)'
        : ''
    }</td>
<td>${time(connection.created_at)}</td>
<td>${incoming ? incomingActions(connection) : ''}</td>
</tr>`,
  )}</tbody>
</table>`;
}

export function connectionsPage(frame: Frame, input: ConnectionsPageInput): string {
  const values = input.values ?? {};
  const fields = input.errors?.fields ?? {};
  const fieldError = (name: string) => (Object.hasOwn(fields, name) ? fields[name] : undefined);
  const asChoices = [['', 'Myself (a person)'] as const, ...input.agents];
  return page(
    'Connections',
    html`<h1>Connections</h1>
${noticeBox(input.notice)}
${errorBox(input.error)}
<p>Another tenant’s agent is reached only through a connection its owner approved.</p>
<h2>Incoming</h2>
<p>Requests to reach your agents. Approving lets the requester claim a relay token once; revoking stops it at once.</p>
${table(input.incoming, true)}
${pagerNav(input.incomingPager, 'Pages of incoming connections')}
<h2>Outgoing</h2>
<p>To receive the events of the threads you open over an approved connection, register a <a href="/dashboard/webhooks#new-endpoint">webhook endpoint</a> for it.</p>
${table(input.outgoing, false)}
${pagerNav(input.outgoingPager, 'Pages of outgoing connections')}
<h2 id="connect">Ask to connect</h2>
${errorBox(input.errors?.form)}
<form method="post" action="/dashboard/connections" class="stack">
${field({ name: 'handle', label: 'Agent handle', value: values.handle, error: fieldError('handle'), maxlength: 40, help: 'The handle of a published agent of another tenant.' })}
${selectField({ name: 'agent_id', label: 'Who asks', choices: asChoices, selected: values.agent_id, error: fieldError('agent_id') })}
<div class="field${fieldError('message') ? ' invalid' : ''}">
<label for="f-message">Message to the owner</label>
<textarea id="f-message" name="message" rows="3" maxlength="2000" required${
      fieldError('message') === undefined ? '' : html` aria-invalid="true" aria-describedby="f-message-error"`
    }>${values.message ?? ''}</textarea>
${fieldError('message') === undefined ? '' : html`<p class="error" id="f-message-error">${fieldError('message')}</p>`}
</div>
<button type="submit">Ask to connect</button>
</form>`,
    frame,
  );
}
