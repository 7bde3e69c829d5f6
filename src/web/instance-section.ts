import type { EgressConnectionRow } from '../agents/egress/records.ts';
import type { InstanceView } from '../agents/runtime/instances.ts';
import { COPY_SCRIPT, copyButton } from './copy.ts';
import { time } from './dashboard-pages.ts';
import { type Html, html } from './html.ts';

// The running half of the agent page (AGT-3…AGT-6): the instance's state and
// address (shown to its owner only), start / stop / restart, the last lines of
// its output, its recent outbound connections and support sessions.

export interface SupportSessionRow {
  readonly operator: string;
  readonly started_at: Date;
  readonly ended_at: Date | null;
}

export interface InstanceSectionInput {
  readonly agentId: string;
  readonly instance: InstanceView | undefined;
  /** The instance's address, or undefined before its first start. */
  readonly url: string | undefined;
  readonly logs: readonly string[];
  readonly egress: readonly EgressConnectionRow[];
  readonly sessions: readonly SupportSessionRow[];
}

const STATE_TEXT: Readonly<Record<InstanceView['state'], string>> = {
  stopped: 'Stopped',
  starting: 'Starting…',
  running: 'Running',
  crashed: 'Crashed',
  stopping: 'Stopping…',
};

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function action(agentId: string, name: 'start' | 'stop' | 'restart', label: string): Html {
  return html`<form method="post" action="/dashboard/agents/${agentId}/${name}" class="inline"><button type="submit">${label}</button></form>`;
}

function egressRows(rows: readonly EgressConnectionRow[]): Html {
  if (rows.length === 0) return html`<p class="muted">No outbound connections yet.</p>`;
  return html`<table><thead><tr><th>When</th><th>Destination</th><th>Kind</th><th>Outcome</th><th>Sent</th><th>Received</th><th>Duration</th></tr></thead>
<tbody>${rows.map(
    (
      row,
    ) => html`<tr><td>${time(row.started_at)}</td><td><code>${row.host}:${String(row.port)}</code></td><td>${row.method}</td>
<td>${row.allowed ? 'allowed' : html`<span class="warning">refused</span>`}${row.reason === null ? '' : html` <span class="help">(${row.reason})</span>`}</td>
<td>${bytes(row.bytes_out)}</td><td>${bytes(row.bytes_in)}</td><td>${String(row.duration_ms)} ms</td></tr>`,
  )}</tbody></table>`;
}

function sessionRows(rows: readonly SupportSessionRow[]): Html {
  if (rows.length === 0) return html`<p class="muted">No support sessions.</p>`;
  return html`<table><thead><tr><th>Operator</th><th>Started</th><th>Ended</th></tr></thead>
<tbody>${rows.map(
    (row) =>
      html`<tr><td><code>${row.operator}</code></td><td>${time(row.started_at)}</td><td>${row.ended_at === null ? html`<span class="muted">open</span>` : time(row.ended_at)}</td></tr>`,
  )}</tbody></table>`;
}

export function instanceSection(input: InstanceSectionInput): Html {
  const { agentId, instance } = input;
  const state = instance?.state ?? 'stopped';
  const wants = instance?.desired_state ?? 'stopped';
  return html`<h2>Instance</h2>
<dl class="facts">
<dt>State</dt><dd>${STATE_TEXT[state]}${wants === 'running' && state !== 'running' ? html` <span class="help">(asked to run)</span>` : ''}${wants === 'stopped' && state === 'running' ? html` <span class="help">(asked to stop)</span>` : ''}</dd>
${instance?.reason === null || instance?.reason === undefined ? '' : html`<dt>Reason</dt><dd>${instance.reason}</dd>`}
${instance === undefined || instance.crashes === 0 ? '' : html`<dt>Crashes in a row</dt><dd>${String(instance.crashes)}</dd>`}
<dt>Started</dt><dd>${time(instance?.started_at ?? null)}</dd>
<dt>Address</dt><dd>${input.url === undefined ? html`<span class="muted">given at its first start</span>` : html`<a href="${input.url}" rel="noreferrer" id="agent-address">${input.url}</a> ${copyButton('agent-address', 'the address')}${COPY_SCRIPT} <span class="help">Unguessable and yours alone: share it only with those who should reach the agent.</span>`}</dd>
</dl>
<p>${action(agentId, 'start', 'Start')} ${action(agentId, 'stop', 'Stop')} ${action(agentId, 'restart', 'Restart')}</p>
<h3>Output</h3>
${input.logs.length === 0 ? html`<p class="muted">No output yet.</p>` : html`<pre class="log">${input.logs.join('\n')}</pre>`}
<h3>Outbound connections</h3>
<p class="help">Everything the agent reaches leaves through the platform's egress proxy, which records each connection.</p>
${egressRows(input.egress)}
<h3>Support sessions</h3>
${sessionRows(input.sessions)}`;
}
