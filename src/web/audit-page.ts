import type { AuditHead, StoredAuditEvent } from '../audit/log.ts';
import { errorBox } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';

// /dashboard/audit: the tenant's audit log, newest first, a page at a time,
// with a filter by action and the chain head. Links page by seq (`before` =
// older, `after` = newer), so a page stays the same while events arrive. No
// script: the filter is a GET form, the service-query fold a link. Users and
// agents appear by name (the raw reference in its title), details as a list.

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
  /** The name of each user and agent the events refer to, by reference (`user:<id>`). */
  readonly names: ReadonlyMap<string, string>;
  /** system.service_query events: folded (with how many among this page's), shown, or no toggle (a filter is on). */
  readonly serviceQueries?: 'folded' | 'shown' | undefined;
  readonly folded?: number | undefined;
}

function pageLink(
  key: 'before' | 'after',
  seq: number,
  action: string | undefined,
  serviceQueries: AuditPageInput['serviceQueries'],
): string {
  const query = new URLSearchParams({ [key]: String(seq) });
  if (action !== undefined) query.set('action', action);
  if (serviceQueries === 'shown') query.set('service_queries', 'shown');
  return `/dashboard/audit?${query.toString()}`;
}

function foldToggle(input: AuditPageInput): Html | string {
  if (input.serviceQueries === 'shown') {
    return html`<p class="fold">Service queries (<code>system.service_query</code>) are shown. <a href="/dashboard/audit">Fold them</a></p>`;
  }
  if (input.serviceQueries !== 'folded') return '';
  const count = input.folded ?? 0;
  const among =
    count === 0 ? '' : ` ${count} of them ${count === 1 ? 'is' : 'are'} among the events on this page.`;
  return html`<p class="fold">Service queries (<code>system.service_query</code>: the platform reading this tenant's data on its behalf) are folded.${among} <a href="/dashboard/audit?service_queries=shown">Show service queries</a></p>`;
}

/** A user or agent by name, the reference it was recorded as in its title; anything else as recorded. */
function reference(value: string, names: ReadonlyMap<string, string>): Html {
  const name = names.get(value);
  if (name === undefined) return html`<code>${value}</code>`;
  return html`<span class="ref" title="${value}">${value.startsWith('agent:') ? 'agent' : 'user'} <strong>${name}</strong></span>`;
}

/** An event's data as a definition list: text and numbers as they are, anything nested as compact JSON. */
function details(data: Record<string, unknown>): Html {
  const entries = Object.entries(data);
  if (entries.length === 0) return html`<span class="muted">—</span>`;
  return html`<dl class="details">${entries.map(
    ([key, value]) =>
      html`<dt>${key}</dt><dd>${
        typeof value === 'string'
          ? value
          : typeof value === 'object' && value !== null
            ? html`<code>${JSON.stringify(value)}</code>`
            : String(value)
      }</dd>`,
  )}</dl>`;
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

function eventRow(event: StoredAuditEvent, names: ReadonlyMap<string, string>): Html {
  return html`<tr><td>${event.seq}</td><td><time datetime="${event.ts}">${event.ts.replace('T', ' ').replace('Z', ' UTC')}</time></td>
<td>${reference(event.actor, names)}</td><td><code>${event.action}</code></td><td>${
    event.target === null ? html`<span class="muted">—</span>` : reference(event.target, names)
  }</td><td>${details(event.data)}</td></tr>`;
}

export function auditPage(frame: Frame, input: AuditPageInput): string {
  const { events, action } = input;
  const pager: Html[] = [];
  if (input.newer !== undefined)
    pager.push(
      html`<a href="${pageLink('after', input.newer, action, input.serviceQueries)}" rel="prev">Newer</a>`,
    );
  if (input.older !== undefined)
    pager.push(
      html`<a href="${pageLink('before', input.older, action, input.serviceQueries)}" rel="next">Older</a>`,
    );
  return page(
    'Audit log',
    html`<h1>Audit log</h1>
<p>Every security-relevant action in this tenant, in a hash chain: changing or removing a past event breaks
every hash after it. <a href="/api/v1/audit/bundle" download>Download the whole log</a> as a recovery bundle: every
event with its hashes, the signed checkpoint, its inclusion proofs and the operator's public key, which
<code>enclave-verify</code> checks offline with no server and no database.</p>
${chainStatus(input.head, input.committed)}
${errorBox(input.error)}
${filterForm(input.actions, action)}
${foldToggle(input)}
${
  events.length === 0
    ? html`<p class="muted">${action === undefined ? 'No events on this page.' : 'No such events on this page.'}</p>`
    : html`<table class="audit"><thead><tr><th>Seq</th><th>Time</th><th>Actor</th><th>Action</th><th>Target</th><th>Details</th></tr></thead><tbody>${events.map((event) => eventRow(event, input.names))}</tbody></table>`
}
${pager.length === 0 ? '' : html`<nav class="pager" aria-label="Audit log pages">${pager}</nav>`}`,
    frame,
  );
}
