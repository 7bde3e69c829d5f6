import type { DirectoryEntry } from '../relay/directory.ts';
import type { QueuedListing } from '../relay/listings.ts';
import { time } from './dashboard-pages.ts';
import { errorBox, noticeBox } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';

// The directory page (RLY-1) and the operator's listing review. Server
// rendered; the search is a GET form, the pager plain links, the decisions
// POST forms: all work without JavaScript.

export interface DirectoryPageInput {
  readonly q: string;
  readonly entries: readonly DirectoryEntry[];
  /** The next page's link; undefined on the last page. */
  readonly next?: string | undefined;
  /** This is a later page: link back to the first. */
  readonly first?: string | undefined;
  readonly error?: string | undefined;
}

function entryRow(entry: DirectoryEntry): Html {
  return html`<li class="entry">
<h2>${entry.name} <code>${entry.handle}</code></h2>
<p>${entry.description}</p>
<p class="muted">Skills: ${entry.skills.map((skill, i) => html`${i > 0 ? ', ' : ''}${skill.name}`)}</p>
<p><a href="${entry.card_url}">Card</a> · <a href="/dashboard/connections?${new URLSearchParams({ handle: entry.handle }).toString()}#connect" aria-label="Connect to ${entry.handle}">Connect</a></p>
</li>`;
}

export function directoryPage(frame: Frame, input: DirectoryPageInput): string {
  return page(
    'Directory',
    html`<h1>Directory</h1>
<p class="help">Agents of other tenants whose owners asked to be listed and whom the operator reviewed. To talk to one, ask to connect: its owner approves or denies.</p>
<form method="get" action="/directory" class="inline" role="search">
<label for="f-q">Search</label>
<input id="f-q" name="q" type="search" maxlength="100" value="${input.q}">
<button type="submit">Search</button>
</form>
${errorBox(input.error)}
${
  input.entries.length === 0
    ? html`<p class="muted">No agents${input.q === '' ? '' : html` match “${input.q}”`}.</p>`
    : html`<ul class="directory">${input.entries.map(entryRow)}</ul>`
}
${
  input.next === undefined && input.first === undefined
    ? ''
    : html`<nav class="pager" aria-label="Pages of the directory">${
        input.first === undefined ? '' : html`<a href="${input.first}">First page</a>`
      }${input.next === undefined ? '' : html`<a href="${input.next}" rel="next">Next page</a>`}</nav>`
}`,
    frame,
  );
}

const REVIEW_NOTICES: Readonly<Record<string, string>> = {
  approved: 'The listing was approved: the agent is in the directory.',
  rejected: 'The listing was rejected; its owner sees the reason.',
};

/** The notice a redirect named (?notice=…), from the fixed list only: the query is attacker-controlled. */
export function reviewNoticeFrom(query: unknown): string | undefined {
  const notice = (query as { notice?: unknown } | undefined)?.notice;
  return typeof notice === 'string' && Object.hasOwn(REVIEW_NOTICES, notice)
    ? REVIEW_NOTICES[notice]
    : undefined;
}

function queuedRow(listing: QueuedListing): Html {
  const base = `/operator/listings/${listing.handle}`;
  return html`<tr>
<td><code>${listing.handle}</code>${listing.review === 'changed' ? html` <span class="muted">(changed since approval)</span>` : ''}</td>
<td>${listing.name}</td>
<td>${listing.description}</td>
<td>${time(listing.requested_at)}</td>
<td><form method="post" action="${base}/approve" class="inline"><button type="submit" aria-label="Approve ${listing.handle}">Approve</button></form>
<form method="post" action="${base}/reject" class="inline">
<label for="reason-${listing.handle}">Reason (optional)</label>
<input id="reason-${listing.handle}" name="reason" type="text" maxlength="500">
<button type="submit" aria-label="Reject ${listing.handle}">Reject</button></form></td>
</tr>`;
}

export function listingReviewPage(
  frame: Frame,
  input: { queue: readonly QueuedListing[]; notice?: string | undefined; error?: string | undefined },
): string {
  return page(
    'Listing review',
    html`<h1>Listing review</h1>
<p class="help">Directory listings waiting for the operator: approve to list the agent in the directory, or reject (the owner sees the reason).</p>
${noticeBox(input.notice)}
${errorBox(input.error)}
${
  input.queue.length === 0
    ? html`<p class="muted">No listings wait for review.</p>`
    : html`<table>
<thead><tr><th>Handle</th><th>Name</th><th>Description</th><th>Requested</th><th>Decision</th></tr></thead>
<tbody>${input.queue.map(queuedRow)}</tbody>
</table>`
}`,
    frame,
  );
}
