import type { Listing } from '../relay/listings.ts';
import { errorBox, hidden } from './forms.ts';
import { type Html, html } from './html.ts';

// The agent page's public-card section (RLY-1): whether the agent's A2A card
// is published, where, and — for those who manage the agent — one button
// that turns it on or off (a plain form: works without JavaScript); and its
// directory listing: its state, the operator's reason on a rejection, and
// one button to ask for it or withdraw it.

export interface CardSectionInput {
  readonly agentId: string;
  readonly published: boolean;
  /** Where the card is read: /agents/:handle/card.json on the public URL. */
  readonly cardUrl: string;
  /** Whether the reader may publish or unpublish (roles.ts 'agent.manage'). */
  readonly manage: boolean;
  readonly error?: string | undefined;
  /** The directory listing; undefined when none was asked for. */
  readonly listing?: Listing | undefined;
}

function listingState(listing: Listing | undefined): Html {
  if (listing === undefined) return html`<span class="muted">Not listed in the directory.</span>`;
  if (listing.listed) return html`Listed in the <a href="/directory">directory</a>.`;
  if (listing.changed_since_approval) {
    return html`Listing approved, but the name, description or template changed since: it waits for a new review and is not in the directory meanwhile.`;
  }
  switch (listing.state) {
    case 'pending':
      return html`Listing requested: it waits for the operator’s review.`;
    case 'approved':
      return html`Listing approved; not in the directory while the card is unpublished.`;
    case 'rejected':
      return html`Listing rejected by the operator${listing.reason === null ? '.' : html`: ${listing.reason}`}`;
    case 'withdrawn':
      return html`<span class="muted">Listing withdrawn.</span>`;
  }
}

function listingForm(input: CardSectionInput): Html {
  const active = input.listing?.state === 'pending' || input.listing?.state === 'approved';
  if (!active && !input.published) return html``;
  return html`<form method="post" action="/dashboard/agents/${input.agentId}/listing" class="stack">
${hidden('action', active ? 'withdraw' : 'request')}
<button type="submit">${active ? 'Withdraw directory listing' : 'Ask for a directory listing'}</button>
</form>`;
}

export function cardSection(input: CardSectionInput): Html {
  return html`<h2 id="card">Public card</h2>
<p class="help">A published card lets anyone who knows the handle read the agent's A2A card: its name, description, template and relay address, signed by the platform. It never shows your tenant, your email or the agent's own address. Nobody can call the agent without your approval.</p>
${errorBox(input.error)}
<p>${
    input.published
      ? html`Published at <a href="${input.cardUrl}"><code>${input.cardUrl}</code></a>.`
      : html`<span class="muted">Not published.</span>`
  }</p>
<p><a href="/dashboard/threads?agent_id=${input.agentId}">Threads with this agent</a>${
    input.manage
      ? html` · <a href="/dashboard/agents/${input.agentId}/inbound-webhooks">Inbound webhooks</a> · <a href="/dashboard/webhooks?agent_id=${input.agentId}#new-endpoint">Webhook endpoints (callbacks)</a>`
      : ''
  }</p>
${
  input.manage
    ? html`<form method="post" action="/dashboard/agents/${input.agentId}/card" class="stack">
${hidden('published', input.published ? 'false' : 'true')}
<button type="submit">${input.published ? 'Unpublish card' : 'Publish card'}</button>
</form>`
    : html`<p class="muted">Its creator, the tenant’s admins and owners publish or unpublish its card.</p>`
}
<h3 id="listing">Directory listing</h3>
<p class="help">Listed agents can be found by every user of this platform in the directory. The operator reviews each listing first, and again when the card’s name, description or template changes.</p>
<p>${listingState(input.listing)}</p>
${input.manage ? listingForm(input) : ''}`;
}
