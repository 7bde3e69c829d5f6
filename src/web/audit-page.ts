import type { AuditHead, StoredAuditEvent } from '../audit/log.ts';
import { errorBox } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';

// /dashboard/audit: the tenant's audit log, newest first, a page at a time,
// with a filter by action and the chain head. Links page by seq (`before` =
// older, `after` = newer), so a page stays the same while events arrive. No
// script: the filter is a GET form.

export const AUDIT_PAGE_SIZE = 50;

export interface AuditPageInput {
  /** Newest first. */
  readonly events: readonly StoredAuditEvent[];
  readonly head: AuditHead;
  /** How far the latest signed checkpoint commits this chain, if it does. */
  readonly committed?: { readonly seq: number; readonly checkpointSize: number } | undefined;
  /** The actions present in the log, for the filter. */
  readonly actions: readonly string[];
  readonly action?: string | undefined;
  /** seq to page older from (`before`), when older events exist. */
  readonly older?: number | undefined;
  /** seq to page newer from (`after`), when newer events exist. */
  readonly newer?: number | undefined;
  readonly error?: string | undefined;
}

function pageLink(key: 'before' | 'after', seq: number, action: string | undefined): string {
  const query = new URLSearchParams({ [key]: String(seq) });
  if (action !== undefined) query.set('action', action);
  return `/dashboard/audit?${query.toString()}`;
}

function chainStatus(head: AuditHead, committed: AuditPageInput['committed']): Html {
  if (head.seq === 0) return html`<p class="chain-status">Chain status: no events yet.</p>`;
  const checkpoint =
    committed === undefined
      ? html`No signed checkpoint covers this chain yet; the next one is made within the hour.`
      : committed.seq === head.seq
        ? html`The latest signed checkpoint (tree size ${committed.checkpointSize}) commits to this head.`
        : html`The latest signed checkpoint (tree size ${committed.checkpointSize}) commits to seq ${committed.seq};
the ${head.seq - committed.seq} newer events will be in the next one.`;
  return html`<p class="chain-status">Chain status: head seq <strong>${head.seq}</strong>, hash
<code title="${head.hash}">${head.hash.slice(0, 16)}…</code>. ${checkpoint}</p>`;
}

function filterForm(actions: readonly string[], selected: string | undefined): Html {
  return html`<form method="get" action="/dashboard/audit" class="filter">
<label for="f-action">Action</label>
<select id="f-action" name="action"><option value=""${selected === undefined ? html` selected` : ''}>All actions</option>${actions.map(
    (action) =>
      html`<option value="${action}"${action === selected ? html` selected` : ''}>${action}</option>`,
  )}</select>
<button type="submit">Filter</button>
</form>`;
}

function eventRow(event: StoredAuditEvent): Html {
  return html`<tr><td>${event.seq}</td><td><time datetime="${event.ts}">${event.ts.replace('T', ' ').replace('Z', ' UTC')}</time></td>
<td><code>${event.actor}</code></td><td><code>${event.action}</code></td><td>${
    event.target === null ? html`<span class="muted">—</span>` : html`<code>${event.target}</code>`
  }</td><td><code class="data">${JSON.stringify(event.data)}</code></td></tr>`;
}

export function auditPage(frame: Frame, input: AuditPageInput): string {
  const { events, action } = input;
  const pager: Html[] = [];
  if (input.newer !== undefined)
    pager.push(html`<a href="${pageLink('after', input.newer, action)}" rel="prev">Newer</a>`);
  if (input.older !== undefined)
    pager.push(html`<a href="${pageLink('before', input.older, action)}" rel="next">Older</a>`);
  return page(
    'Audit log',
    html`<h1>Audit log</h1>
<p>Every security-relevant action in this tenant, in a hash chain: changing or removing a past event breaks
every hash after it. <a href="/api/v1/audit/export" download>Export the whole log</a> (JSON lines, one event per
line, with every hash), or <a href="/api/v1/audit/bundle" download>download the recovery bundle</a>: the log with
the signed checkpoint, its inclusion proofs and the operator's public key, which <code>enclave-verify</code> checks
offline with no server and no database.</p>
${chainStatus(input.head, input.committed)}
${errorBox(input.error)}
${filterForm(input.actions, action)}
${
  events.length === 0
    ? html`<p class="muted">${action === undefined ? 'No events on this page.' : 'No such events on this page.'}</p>`
    : html`<table class="audit"><thead><tr><th>Seq</th><th>Time</th><th>Actor</th><th>Action</th><th>Target</th><th>Details</th></tr></thead><tbody>${events.map(eventRow)}</tbody></table>`
}
${pager.length === 0 ? '' : html`<nav class="pager" aria-label="Audit log pages">${pager}</nav>`}`,
    frame,
  );
}
