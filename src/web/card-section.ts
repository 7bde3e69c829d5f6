import { errorBox, hidden } from './forms.ts';
import { type Html, html } from './html.ts';

// The agent page's public-card section (RLY-1): whether the agent's A2A card
// is published, where, and — for those who manage the agent — one button
// that turns it on or off (a plain form: works without JavaScript).

export interface CardSectionInput {
  readonly agentId: string;
  readonly published: boolean;
  /** Where the card is read: /agents/:handle/card.json on the public URL. */
  readonly cardUrl: string;
  /** Whether the reader may publish or unpublish (roles.ts 'agent.manage'). */
  readonly manage: boolean;
  readonly error?: string | undefined;
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
<p><a href="/dashboard/threads?agent_id=${input.agentId}">Threads with this agent</a></p>
${
  input.manage
    ? html`<form method="post" action="/dashboard/agents/${input.agentId}/card" class="stack">
${hidden('published', input.published ? 'false' : 'true')}
<button type="submit">${input.published ? 'Unpublish card' : 'Publish card'}</button>
</form>`
    : html`<p class="muted">Its creator, the tenant’s admins and owners publish or unpublish its card.</p>`
}`;
}
