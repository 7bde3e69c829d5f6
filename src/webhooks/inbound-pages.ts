import { COPY_SCRIPT, copyButton } from '../web/copy.ts';
import { time } from '../web/dashboard-pages.ts';
import { errorBox, field } from '../web/forms.ts';
import { type Frame, html, page } from '../web/html.ts';
import type { InboundEndpoint } from './inbound.ts';

// The agent's inbound webhooks page (RLY-11): its endpoints with their URLs,
// the form that creates one, and, once, the new endpoint's secret.

export interface InboundPageInput {
  readonly agentId: string;
  readonly agentName: string;
  readonly endpoints: readonly (InboundEndpoint & { url: string })[];
  /** The endpoint just created, with its secret: shown on this one page view only. */
  readonly created?: { url: string; secret: string } | undefined;
  readonly error?: string | undefined;
}

export function inboundWebhooksPage(frame: Frame, input: InboundPageInput): string {
  const base = `/dashboard/agents/${input.agentId}/inbound-webhooks`;
  return page(
    'Inbound webhooks',
    html`<p><a href="/dashboard/agents/${input.agentId}">← ${input.agentName}</a></p>
<h1>Inbound webhooks</h1>
<p class="help">An outside service (a CI system, a chat app) sends events to this agent by POSTing to an endpoint’s URL, signed as Standard Webhooks specifies with the endpoint’s secret. Unsigned, stale or wrongly signed requests are refused; each event reaches the agent once, marked as untrusted content.</p>
${errorBox(input.error)}
${
  input.created === undefined
    ? ''
    : html`<section class="secret" aria-labelledby="new-endpoint">
<h2 id="new-endpoint">New endpoint</h2>
<p>URL: <code>${input.created.url}</code></p>
<p class="warning">Copy its secret now. This is the only time it is shown.</p>
<p><code class="token" id="new-endpoint-secret">${input.created.secret}</code></p>
<p>${copyButton('new-endpoint-secret', 'the secret')}</p>
</section>
${COPY_SCRIPT}`
}
${
  input.endpoints.length === 0
    ? html`<p class="muted">No inbound endpoints yet.</p>`
    : html`<table><thead><tr><th>Description</th><th>URL</th><th>Created</th><th><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${input.endpoints.map(
        (endpoint) =>
          html`<tr><td>${endpoint.description}</td><td><code>${endpoint.url}</code></td><td>${time(
            endpoint.created_at,
          )}</td><td><a href="${base}/${endpoint.id}/delete" aria-label="Delete the endpoint ${endpoint.url}">Delete</a></td></tr>`,
      )}</tbody></table>`
}
<h2>New endpoint</h2>
<form method="post" action="${base}" class="stack">
${field({ name: 'description', label: 'Description', maxlength: 200, help: 'What sends to it, for you to recognise it' })}
<button type="submit">Create endpoint</button>
</form>`,
    frame,
  );
}
