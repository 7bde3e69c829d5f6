import { type EgressConnectionRow, egressOutcome } from '../agents/egress/records.ts';
import {
  type InstanceAction,
  type InstanceStates,
  type InstanceView,
  instanceActions,
  instanceSettling,
} from '../agents/runtime/instances.ts';
import { COPY_SCRIPT, copyButton } from './copy.ts';
import { time } from './dashboard-pages.ts';
import { type Html, html } from './html.ts';

// The running half of the agent page (AGT-3…AGT-6): the instance's state and
// address (shown to its owner only), start / stop / restart, the last lines of
// its output, its recent outbound connections and support sessions.
// While a start or stop is under way, agent-state.js polls the state as JSON
// and updates the state line and buttons in place; without JavaScript, a
// Refresh link does the same by hand.

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
  /** Whether the reader may start and stop it (roles.ts 'agent.manage'); otherwise no buttons are drawn. */
  readonly manage: boolean;
  /** Whether the reader may see its address, output and egress (roles.ts 'agent.address'). */
  readonly reach: boolean;
}

const CREATOR_ONLY = 'Shown to its creator, the tenant’s admins and owners.';

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

/** The state as one line: `Stopped (asked to run)`. */
export function stateLine(view: InstanceStates): string {
  const state = view?.state ?? 'stopped';
  const wants = view?.desired_state ?? 'stopped';
  const asked =
    wants === 'running' && state !== 'running'
      ? ' (asked to run)'
      : wants === 'stopped' && state === 'running'
        ? ' (asked to stop)'
        : '';
  return `${STATE_TEXT[state]}${asked}`;
}

/** What agent-state.js reads from GET /dashboard/agents/:id/state. */
export function instanceStateJson(view: InstanceStates) {
  return { line: stateLine(view), settling: instanceSettling(view), actions: instanceActions(view) };
}

function action(agentId: string, name: InstanceAction, label: string, enabled: boolean): Html {
  return html`<form method="post" action="/dashboard/agents/${agentId}/${name}" class="inline"><button type="submit" data-action="${name}"${enabled ? '' : html` disabled`}>${label}</button></form>`;
}

function outcomeCell(row: EgressConnectionRow): Html {
  const outcome = egressOutcome(row);
  if (outcome === 'failed') return html`<span class="warning">failed: ${row.reason ?? ''}</span>`;
  return html`${outcome === 'allowed' ? 'allowed' : html`<span class="warning">refused</span>`}${row.reason === null ? '' : html` <span class="help">(${row.reason})</span>`}`;
}

function egressRows(rows: readonly EgressConnectionRow[]): Html {
  if (rows.length === 0) return html`<p class="muted">No outbound connections yet.</p>`;
  return html`<table><thead><tr><th>When</th><th>Destination</th><th>Kind</th><th>Outcome</th><th>Sent</th><th>Received</th><th>Duration</th></tr></thead>
<tbody>${rows.map(
    (
      row,
    ) => html`<tr><td>${time(row.started_at)}</td><td><code>${row.host}:${String(row.port)}</code></td><td>${row.method}</td>
<td>${outcomeCell(row)}</td>
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
  const enabled = instanceActions(instance);
  const settling = instanceSettling(instance);
  return html`<h2>Instance</h2>
<div id="instance-state" data-state-url="/dashboard/agents/${agentId}/state"${settling ? html` data-settling` : ''}>
<dl class="facts">
<dt>State</dt><dd><span data-state-line>${stateLine(instance)}</span> <a href="/dashboard/agents/${agentId}" data-refresh${settling ? '' : html` hidden`}>Refresh</a></dd>
${instance?.reason === null || instance?.reason === undefined ? '' : html`<dt>Reason</dt><dd>${instance.reason}</dd>`}
${instance === undefined || instance.crashes === 0 ? '' : html`<dt>Crashes in a row</dt><dd>${String(instance.crashes)}</dd>`}
<dt>Started</dt><dd>${time(instance?.started_at ?? null)}</dd>
<dt>Address</dt><dd>${!input.reach ? html`<span class="muted">${CREATOR_ONLY}</span>` : input.url === undefined ? html`<span class="muted">given at its first start</span>` : html`<a href="${input.url}" rel="noreferrer" id="agent-address">${input.url}</a> ${copyButton('agent-address', 'the address')}${COPY_SCRIPT} <span class="help">Unguessable and yours alone: share it only with those who should reach the agent.</span>`}</dd>
</dl>
${
  input.manage
    ? html`<p>${action(agentId, 'start', 'Start', enabled.start)} ${action(agentId, 'stop', 'Stop', enabled.stop)} ${action(agentId, 'restart', 'Restart', enabled.restart)}</p>`
    : html`<p class="muted">Its creator, the tenant’s admins and owners start and stop it.</p>`
}
</div>
<script src="/static/agent-state.js" defer></script>
<h3>Output</h3>
${!input.reach ? html`<p class="muted">${CREATOR_ONLY}</p>` : input.logs.length === 0 ? html`<p class="muted">No output yet.</p>` : html`<pre class="log">${input.logs.join('\n')}</pre>`}
<h3>Outbound connections</h3>
<p class="help">Everything the agent reaches leaves through the platform's egress proxy, which records each connection.</p>
${input.reach ? egressRows(input.egress) : html`<p class="muted">${CREATOR_ONLY}</p>`}
<h3>Support sessions</h3>
${sessionRows(input.sessions)}`;
}
