import type { Sql } from 'postgres';
import type { App } from '../http/app.ts';
import { sendPage } from './forms.ts';
import { type Frame, type Html, html, page } from './html.ts';

// /dev/mail: the development outbox, newest first. Registered only in
// development without SMTP; in production the route does not exist (404).
// It holds recovery and invite links, so it is served to loopback clients
// only (the client as ENCLAVE_TRUST_PROXY resolves it): anyone else gets the
// 404 of a route that does not exist. Bodies are shown escaped; http(s)
// URLs in them become links.

interface OutboxMail {
  readonly id: string;
  readonly to_address: string;
  readonly subject: string;
  readonly body: string;
  readonly created_at: Date;
}

/** 127.0.0.0/8, ::1, and IPv4-mapped loopback. */
export function isLoopback(address: string): boolean {
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return address === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

const URL_IN_TEXT = /(https?:\/\/[^\s<>"'`]+)/;

/** Text with its URLs as links; every part goes through the escaping template. */
export function linkify(text: string): Html[] {
  return text
    .split(URL_IN_TEXT)
    .map((part, index) => (index % 2 === 1 ? html`<a href="${part}">${part}</a>` : html`${part}`));
}

export function devMailPage(mails: readonly OutboxMail[], frame?: Frame): string {
  return page(
    'Development mail',
    html`<h1>Development mail</h1>
<p class="notice">No SMTP server is configured (<code>ENCLAVE_SMTP_URL</code>), so mail lands here instead.
This page exists only in development.</p>
${
  mails.length === 0
    ? html`<p class="muted">No mail yet.</p>`
    : mails.map(
        (mail) => html`<article class="mail" id="mail-${mail.id}">
<h2>${mail.subject}</h2>
<p class="muted">To ${mail.to_address} · <time datetime="${mail.created_at.toISOString()}">${mail.created_at.toISOString()}</time></p>
<pre>${linkify(mail.body)}</pre>
</article>`,
      )
}`,
    frame,
  );
}

export function registerDevMail(app: App, sql: Sql): void {
  app.get('/dev/mail', { config: { auth: 'none' }, schema: { hide: true } }, async (request, reply) => {
    if (!isLoopback(request.ip)) return reply.callNotFound();
    const mails = await sql<OutboxMail[]>`
      select id, to_address, subject, body, created_at from dev_outbox order by created_at desc, id limit 100`;
    reply.header('cache-control', 'no-store');
    return sendPage(reply, 200, devMailPage(mails, await request.pageFrame()));
  });
}
