import type { ProviderButton } from '../web/account-pages.ts';
import { postButton, time } from '../web/dashboard-pages.ts';
import { type Html, html } from '../web/html.ts';
import type { IdentityListing } from './identities.ts';

// /profile's "Sign-in providers" section (ACC-9): the identities linked to
// the account, each with an unlink button, and a link button for each
// configured provider the account has no identity at yet.

export function identitiesSection(
  providers: readonly ProviderButton[],
  identities: readonly IdentityListing[],
): Html {
  if (providers.length === 0 && identities.length === 0) return html``;
  const labels = new Map(providers.map((provider) => [provider.name, provider.label]));
  const linked = new Set(identities.map((identity) => identity.provider));
  const unlinked = providers.filter((provider) => !linked.has(provider.name));
  return html`<h2>Sign-in providers</h2>
${
  identities.length === 0
    ? html`<p>No identity is linked to this account.</p>`
    : html`<table><thead><tr><th>Provider</th><th>Linked</th><th>Last used</th><th><span class="visually-hidden">Actions</span></th></tr></thead><tbody>${identities.map(
        (identity) => html`<tr><td>${labels.get(identity.provider) ?? identity.provider}</td>
<td>${time(identity.created_at)}</td><td>${time(identity.last_used_at)}</td>
<td>${postButton(`/profile/identities/${identity.id}/unlink`, 'Unlink', `Unlink ${labels.get(identity.provider) ?? identity.provider}`)}</td></tr>`,
      )}</tbody></table>`
}
${unlinked.map((provider) => postButton(`/profile/link/${provider.name}`, `Link ${provider.label}`))}`;
}
