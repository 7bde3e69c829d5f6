// Server-rendered HTML with escaping by construction: every interpolated
// value is escaped unless it is itself an Html fragment made by this tag.

export class Html {
  readonly value: string;
  constructor(value: string) {
    this.value = value;
  }
  toString(): string {
    return this.value;
  }
}

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => ESCAPES[ch] ?? ch);
}

type Interpolation = Html | string | number | boolean | null | undefined | readonly Interpolation[];

function render(value: Interpolation): string {
  if (value instanceof Html) return value.value;
  if (Array.isArray(value)) return value.map(render).join('');
  if (value === null || value === undefined || value === false) return '';
  return escapeHtml(String(value));
}

export function html(strings: TemplateStringsArray, ...values: Interpolation[]): Html {
  let out = strings[0] ?? '';
  for (let i = 0; i < values.length; i += 1) out += render(values[i]) + (strings[i + 1] ?? '');
  return new Html(out);
}

/** The signed-in frame: who is signed in, to which tenant, and what they may manage. */
export interface Frame {
  readonly username: string;
  readonly tenantName: string;
  /** Owners, admins and operators manage invites. */
  readonly canInvite: boolean;
  /** Owners and admins read the audit log (src/accounts/roles.ts). */
  readonly canReadAudit: boolean;
}

function navigation(frame: Frame | undefined): Html {
  if (frame === undefined) return html`<nav><a href="/login">Sign in</a><a href="/docs">API docs</a></nav>`;
  return html`<nav><a href="/dashboard">Dashboard</a><a href="/dashboard/agents">Agents</a><a href="/dashboard/connections">Connections</a><a href="/dashboard/threads">Threads</a><a href="/dashboard/webhooks">Webhooks</a><a href="/dashboard/settings/tokens">Tokens</a>${
    frame.canInvite ? html`<a href="/dashboard/settings/invites">Invites</a>` : ''
  }<a href="/dashboard/members">Members</a>${
    frame.canReadAudit ? html`<a href="/dashboard/audit">Audit</a>` : ''
  }<a href="/profile">Profile</a><a href="/docs">API docs</a></nav>
<div class="who"><span>${frame.tenantName} · ${frame.username}</span>
<form method="post" action="/logout"><button type="submit" class="link">Sign out</button></form></div>`;
}

/** A whole document; pass the frame on pages of a signed-in user. */
export function page(title: string, body: Html, frame?: Frame): string {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Enclave</title>
<link rel="stylesheet" href="/static/app.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<header class="top"><a class="brand" href="/">Enclave</a>${navigation(frame)}</header>
<main>${body}</main>
</body>
</html>
`.value;
}
