import { html, page } from '../web/html.ts';
import type { StatusReport } from './components.ts';

// /status (RLY-10): the same report as /status.json, as a plain server-rendered
// table. No script; it shows the report of the moment and a reload shows the next.

type Figure = string | number | null;

function shown(value: Figure, unit = ''): string {
  return value === null ? '—' : `${value}${unit}`;
}

function ageText(seconds: number | null): string {
  if (seconds === null) return '—';
  if (seconds < 120) return `${seconds} s ago`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

function rateText(rate: number | null): string {
  return rate === null ? 'no deliveries' : `${(rate * 100).toFixed(1)} %`;
}

export function renderStatusPage(report: StatusReport): string {
  const c = report.components;
  const rows: readonly (readonly [string, string, string])[] = [
    ['Database', c.database.status, `answered in ${shown(c.database.response_ms, ' ms')}`],
    [
      'Job workers',
      c.job_workers.status,
      `${shown(c.job_workers.workers_seen)} seen in the last ${c.job_workers.window_minutes} min`,
    ],
    [
      'Job queue',
      c.queue.status,
      `${shown(c.queue.depth)} waiting; oldest waited ${shown(c.queue.oldest_pending_age_seconds, ' s')}`,
    ],
    [
      'Callback deliveries',
      c.callbacks.status === 'no_data' ? 'no data' : c.callbacks.status,
      `last hour ${rateText(c.callbacks.success_rate_hour)}; last day ${rateText(c.callbacks.success_rate_day)}`,
    ],
    ['Agent instances', c.agent_instances.status, `${shown(c.agent_instances.running)} running`],
    [
      'Audit checkpoints',
      c.audit_checkpoints.status,
      `latest signed ${ageText(c.audit_checkpoints.latest_age_seconds)}`,
    ],
  ];
  return page(
    'Status',
    html`<h1>Status: ${report.status}</h1>
<p class="muted">Checked at <time datetime="${report.checked_at}">${report.checked_at}</time>. Machine-readable: <a href="/status.json">/status.json</a>.</p>
<table><thead><tr><th>Component</th><th>Status</th><th>Figures</th></tr></thead><tbody>${rows.map(
      ([name, status, figures]) => html`<tr><td>${name}</td><td>${status}</td><td>${figures}</td></tr>`,
    )}</tbody></table>`,
  );
}
