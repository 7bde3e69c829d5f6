import { type Html, html, page } from '../web/html.ts';
import type { PostureEntry, SecurityDocument } from './security-document.ts';

// /security (OPS-5): the signed document as a plain page, no script. Part 1
// the controls as docs/controls.md maps them (a row whose tests were not found
// reads "unproven"), part 2 the latest verifier runs with their figures, part
// 3 what Enclave does not do, then how to report a vulnerability.

const CHECK_NAMES: Readonly<Record<PostureEntry['check'], string>> = {
  chain_integrity: 'Audit chain integrity',
  tenant_isolation: 'Tenant isolation probe and RLS coverage',
  retention_slo: 'Audit retention',
  key_hygiene: 'Key hygiene',
  checkpoint_freshness: 'Checkpoint freshness',
};

const RESULT_TEXT: Readonly<Record<PostureEntry['result'], string>> = {
  pass: 'pass',
  failed: 'FAILED',
  error: 'ERROR: the verifier did not finish',
  not_run: 'not run yet',
};

/** Code spans of docs/controls.md (`…`) shown as code; everything else as text. */
function markdownCode(text: string): Html[] {
  return text
    .split(/(`[^`]+`)/)
    .map((part) =>
      part.startsWith('`') && part.endsWith('`') && part.length > 1
        ? html`<code>${part.slice(1, -1)}</code>`
        : html`${part}`,
    );
}

function figures(details: PostureEntry['details']): Html {
  const entries = Object.entries(details).filter(
    ([, value]) => value !== null && !(Array.isArray(value) && value.length === 0),
  );
  if (entries.length === 0) return html``;
  return html`<dl class="figures">${entries.map(
    ([name, value]) =>
      html`<dt>${name.replaceAll('_', ' ')}</dt><dd>${typeof value === 'string' ? value : JSON.stringify(value)}</dd>`,
  )}</dl>`;
}

/** 2026-12-03T03:06:04.522Z → 2026-12-03 03:06:04 UTC */
const shownTime = (iso: string): string => `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;

const durationText = (minutes: number): string =>
  minutes < 60 ? `${minutes} minutes` : minutes === 60 ? '1 hour' : `${minutes / 60} hours`;

/** 60 → "hourly", 15 → "every 15 minutes", 360 → "every 6 hours" (the allowed intervals divide a day). */
function intervalText(minutes: number): string {
  if (minutes === 60) return 'hourly';
  if (minutes === 1440) return 'daily';
  return `every ${durationText(minutes)}`;
}

function postureRow(run: PostureEntry, intervalMinutes: number): Html {
  const when =
    run.finished_at === null
      ? html`—`
      : html`<time datetime="${run.finished_at}">${shownTime(run.finished_at)}</time><br><span class="muted">took ${run.duration_ms} ms</span>`;
  // A stale result, a pass above all, must not read as current: the verifier has stopped running.
  const result = run.stale
    ? html`<strong>STALE</strong><br><span class="muted">last result ${RESULT_TEXT[run.result]}, over ${durationText(2 * intervalMinutes)} old</span>`
    : html`<strong>${RESULT_TEXT[run.result]}</strong>`;
  return html`<tr class="result-${run.stale ? 'stale' : run.result}" id="posture-${run.check}"><td>${CHECK_NAMES[run.check]}</td><td>${result}</td><td>${when}</td><td>${run.summary}${figures(run.details)}</td></tr>`;
}

function drillLine(drill: SecurityDocument['backup_drill']): Html {
  if (drill === null) return html`none run on this database yet; it is never shown as passing.`;
  const failed = drill.checks.filter((check) => !check.ok);
  return html`<strong>${drill.ok ? 'pass' : 'FAILED'}</strong>, finished <time datetime="${drill.finished_at}">${shownTime(drill.finished_at)}</time>.${
    failed.length === 0
      ? html``
      : html` Failed: ${failed.map((check, index) => html`${index === 0 ? '' : '; '}${check.name} (${check.detail})`)}.`
  }`;
}

function controlRow(control: SecurityDocument['controls'][number]): Html {
  const count = control.tests.reduce((sum, named) => sum + named.titles.length, 0);
  const documented =
    control.status === control.documented_status
      ? ''
      : html`<br><span class="muted">${control.documented_status}</span>`;
  // <details> opens without script: the evidence is one click away and the table stays readable.
  return html`<tr id="control-${control.id}"><td>${control.id}</td><td>${control.status}${documented}</td><td>${markdownCode(control.promise)}
<details><summary>Enforced in, proven by ${count} ${count === 1 ? 'test' : 'tests'}</summary>
<p>Enforced in: ${markdownCode(control.code)}</p>${
    count === 0
      ? html`<p class="muted">No test named.</p>`
      : control.tests.map(
          (named) =>
            html`<p><code>${named.file}</code></p><ul>${named.titles.map((title) => html`<li>${title}</li>`)}</ul>`,
        )
  }</details></td></tr>`;
}

const NOT_DONE: readonly Html[] = [
  html`Enclave has no SOC 2, ISO 27001, HIPAA or PCI attestation. Nobody outside has audited it; this page and the tests it names are the evidence there is.`,
  html`It does not protect you from whoever runs it. The operator holds the master key, the database superuser and the host: an operator who means harm can read credentials and agent data. The audit chain and the signed checkpoints make changes to the audit log detectable afterwards; they do not prevent them.`,
  html`The local runtime runs each agent in a bubblewrap sandbox on the host's own kernel, not in a virtual machine: a kernel exploit inside an agent reaches the host. Where the host cannot enforce a limit, the instance does not start unless the operator has allowed that limit to go unenforced by name.`,
  html`It does not decide what an agent says or does with the data it is given. Text from other agents and webhooks is wrapped and marked as untrusted, but a model may still follow instructions it reads.`,
  html`It does not take backups on its own schedule and has no high-availability mode: backing up, and testing the restore, is the operator's job.`,
  html`It has no bug bounty. Reports are welcome at the contact below, and the operator decides how they are handled.`,
  html`The figures below are only as recent as the last verifier run, shown beside each. A check that has not run says so; it is never shown as passing.`,
];

export function renderSecurityPage(document: SecurityDocument): string {
  return page(
    'Security',
    html`<h1>Security</h1>
<p>What this Enclave promises, what proves it, what its verifiers found when they last ran, and what it does not do. The same facts, signed with the operator's key: <a href="/security.json">/security.json</a> (signature: <a href="/security.json.sig">/security.json.sig</a>, key: <a href="/.well-known/jwks.json">/.well-known/jwks.json</a>).</p>
<h2 id="controls">1. Controls</h2>
<p>Each control, its status, the code that enforces it and the tests that prove it, as <code>docs/controls.md</code> maps them. A control is shown as enforced only when every test it names exists; otherwise it reads <em>unproven</em>.</p>
<table class="controls"><thead><tr><th>ID</th><th>Status</th><th>Promise, code and tests</th></tr></thead><tbody>${document.controls.map(controlRow)}</tbody></table>
<h2 id="posture">2. Live posture</h2>
<p>The latest run of each verifier. They run ${intervalText(document.posture_interval_minutes)} in the job worker, and once shortly after it starts; a run older than two intervals reads <em>STALE</em>, whatever its result.</p>
<table class="posture"><thead><tr><th>Check</th><th>Result</th><th>Last run</th><th>Figures</th></tr></thead><tbody>${document.posture.map((run) => postureRow(run, document.posture_interval_minutes))}</tbody></table>
<p id="backup-drill">Latest backup-and-restore drill (<code>enclave drill</code>): ${drillLine(document.backup_drill)}</p>
<p>Latest signed audit checkpoint: ${
      document.checkpoint === null
        ? 'none yet'
        : html`size ${document.checkpoint.size}, signed <time datetime="${document.checkpoint.signed_at}">${shownTime(document.checkpoint.signed_at)}</time> (<a href="/audit/checkpoint">the note</a>)`
    }. SBOM of this build: ${document.sbom === null ? 'none shipped' : html`<code>${document.sbom.file}</code>, SHA-256 <code>${document.sbom.sha256}</code>`}.</p>
<h2 id="not-done">3. What Enclave does not do</h2>
<ul>${NOT_DONE.map((item) => html`<li>${item}</li>`)}</ul>
<h2 id="report">Reporting a vulnerability</h2>
${
  document.contact === null
    ? html`<p>This operator has not published a security contact (<code>ENCLAVE_SECURITY_CONTACT</code>).</p>`
    : html`<p>Write to <a href="${document.contact}">${document.contact.replace(/^mailto:/, '')}</a> with what you found and how to repeat it. Please do not test against other people's accounts or agents. The same contact is in <a href="/.well-known/security.txt">/.well-known/security.txt</a>.</p>`
}`,
  );
}
