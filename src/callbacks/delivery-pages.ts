import { time } from '../web/dashboard-pages.ts';
import { type Html, html } from '../web/html.ts';
import type { DeliveryDetail, DeliverySummary } from './delivery-log.ts';

// The delivery log section of a callback endpoint's dashboard page
// (/dashboard/webhooks/:id, RLY-7): its deliveries, newest first, and one
// delivery's attempts when asked for. A section, not a page: the endpoint
// page (src/callbacks/endpoint-pages.ts) places it. Everything shown came
// from the receiver or the event (answers, payloads) and is escaped by html``.

export interface DeliveryLogInput {
  /** The endpoint page's path: the section links to `?after=` and `?delivery=` on it. */
  readonly base: string;
  readonly deliveries: readonly DeliverySummary[];
  readonly nextAfter: string | null;
  readonly detail?: DeliveryDetail | undefined;
}

const outcome = (status: number | null, error: string | null): string =>
  [status === null ? '' : String(status), error ?? ''].filter(Boolean).join(' ') || '—';

function attempts(detail: DeliveryDetail): Html {
  return html`<section aria-labelledby="delivery-${detail.id}">
<h3 id="delivery-${detail.id}">Delivery <code>${detail.webhook_id}</code> (${detail.event_type})</h3>
${
  detail.payload === null
    ? html`<p>State: ${detail.state}. Payload expired: the body sent (${detail.payload_bytes} bytes) and the answers were deleted ${time(detail.payload_deleted_at)}, 30 days after the event.</p>`
    : html`<p>State: ${detail.state}. Body sent:</p>
<pre>${detail.payload}</pre>`
}
${
  detail.attempt_log.length === 0
    ? html`<p class="muted">No attempt yet.</p>`
    : html`<table><thead><tr><th>#</th><th>Time</th><th>Outcome</th><th>Latency</th><th>Answer (first 1 KB)</th></tr></thead><tbody>${detail.attempt_log.map(
        (a) =>
          html`<tr><td>${a.number}</td><td>${time(a.attempted_at)}</td><td>${outcome(a.status, a.error)}</td><td>${a.latency_ms} ms</td><td>${a.response_prefix === null && detail.payload_deleted_at !== null ? html`<span class="muted">expired</span>` : html`<pre>${a.response_prefix ?? ''}</pre>`}</td></tr>`,
      )}</tbody></table>`
}
</section>`;
}

export function deliveryLogSection(input: DeliveryLogInput): Html {
  return html`<section aria-labelledby="delivery-log">
<h2 id="delivery-log">Deliveries</h2>
<p class="help">Each event is sent with the same webhook-id on every attempt: at once, then after 5 s, 5 min, 30 min, 2 h, 5 h and 10 h, then it is failed. Five failed deliveries in a row disable the endpoint.</p>
${
  input.deliveries.length === 0
    ? html`<p class="muted">No deliveries yet.</p>`
    : html`<table><thead><tr><th>Created</th><th>Event</th><th>State</th><th>Attempts</th><th>Last status</th><th>Next attempt</th></tr></thead><tbody>${input.deliveries.map(
        (d) =>
          html`<tr><td><a href="${input.base}?delivery=${d.id}">${time(d.created_at)}</a></td><td>${d.event_type}</td><td>${d.state}</td><td>${d.attempts}</td><td>${d.last_status ?? '—'}</td><td>${time(d.next_attempt_at)}</td></tr>`,
      )}</tbody></table>`
}
${input.nextAfter === null ? '' : html`<p><a href="${input.base}?after=${encodeURIComponent(input.nextAfter)}">Older deliveries</a></p>`}
${input.detail === undefined ? '' : attempts(input.detail)}
</section>`;
}
