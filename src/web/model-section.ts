import type { ModelUsage } from '../gateway/service.ts';
import { PROVIDER_LABELS } from '../gateway/service.ts';
import type { FormErrors } from './account-pages.ts';
import { errorBox, field } from './forms.ts';
import { type Html, html } from './html.ts';

// The agent page's model-gateway section (AGT-7): the agent's model calls per
// UTC day and model, and the limits its tenant sets on them. The keys never
// appear here: the agent never holds one, and the page never shows one.

/** The limits form's text, shown again after an error. */
export interface ModelLimitValues {
  readonly requests_per_minute: string;
  readonly tokens_per_day: string;
}

export interface ModelSectionInput {
  readonly agentId: string;
  readonly models: ModelUsage;
  /** Whether the reader may change the limits (roles.ts 'agent.manage'). */
  readonly manage: boolean;
  readonly form?: { readonly values: ModelLimitValues; readonly errors: FormErrors } | undefined;
}

const number = (value: number) => value.toLocaleString('en-US');
const limitText = (value: number | null, unit: string) =>
  value === null ? html`<span class="muted">no limit</span>` : html`${number(value)} ${unit}`;

export function modelSection(input: ModelSectionInput): Html {
  const { usage, limits } = input.models;
  const values = input.form?.values ?? {
    requests_per_minute: limits.requests_per_minute === null ? '' : String(limits.requests_per_minute),
    tokens_per_day: limits.tokens_per_day === null ? '' : String(limits.tokens_per_day),
  };
  const errors = input.form?.errors ?? {};
  return html`<h2 id="models">Model calls</h2>
<p class="help">The agent calls Anthropic, OpenAI, Google AI and xAI through the platform's model gateway with its own identity. The key you gave is added to each call by the gateway and never reaches the agent.</p>
${
  usage.length === 0
    ? html`<p class="muted">No model calls in the last 7 days.</p>`
    : html`<table><caption>The last 7 days (UTC), newest first</caption>
<thead><tr><th>Day</th><th>Provider</th><th>Model</th><th>Calls</th><th>Failed</th><th>Input tokens</th><th>Output tokens</th></tr></thead>
<tbody>${usage.map(
        (row) =>
          html`<tr><td>${row.day}</td><td>${PROVIDER_LABELS[row.provider]}</td><td><code>${row.model}</code></td><td>${number(row.requests)}</td><td>${number(row.failed)}</td><td>${number(row.input_tokens)}</td><td>${number(row.output_tokens)}</td></tr>`,
      )}</tbody></table>`
}
<h3>Limits</h3>
<dl class="facts">
<dt>Calls a minute</dt><dd>${limitText(limits.requests_per_minute, 'calls')}</dd>
<dt>Tokens a day (UTC)</dt><dd>${limitText(limits.tokens_per_day, 'tokens')}</dd>
</dl>
${
  input.manage
    ? html`${errorBox(errors.form)}
<form method="post" action="/dashboard/agents/${input.agentId}/model-limits" class="stack">
${field({ name: 'requests_per_minute', label: 'Calls a minute (optional)', value: values.requests_per_minute, required: false, autocomplete: 'off', maxlength: 6, help: 'Over it, a call is refused with 429 before it reaches the provider. Empty: no limit.', error: errors.fields?.requests_per_minute })}
${field({ name: 'tokens_per_day', label: 'Tokens a day (optional)', value: values.tokens_per_day, required: false, autocomplete: 'off', maxlength: 13, help: 'Input and output tokens together, per UTC day. Empty: no limit.', error: errors.fields?.tokens_per_day })}
<button type="submit">Save limits</button>
</form>`
    : html`<p class="muted">Its creator, the tenant’s admins and owners set its limits.</p>`
}`;
}
