import { createTransport } from 'nodemailer';
import type { Sql } from 'postgres';
import type { Config } from '../config.ts';

// Outgoing mail. With an SMTP URL (ENCLAVE_SMTP_URL or _FILE, an operator
// secret: src/operator-secrets/smtp-url.ts) messages go out over SMTP
// (nodemailer); without it (development only: start-up refuses production
// without SMTP) they land in the dev_outbox table, shown at /dev/mail.
// Mail is sent only from jobs (OPS-2), so a failed send throws and the job
// is retried with backoff.

export interface Mail {
  readonly to: string;
  readonly subject: string;
  /** Plain text only: no HTML part, nothing to sanitise. */
  readonly text: string;
}

export interface Mailer {
  /** 'smtp' or 'outbox': where send() puts a message. */
  readonly kind: 'smtp' | 'outbox';
  send(mail: Mail): Promise<void>;
  close(): void;
}

export function createSmtpMailer(smtpUrl: string, from: string): Mailer {
  // The URL may carry the SMTP password: it goes to nodemailer and nowhere else.
  const transport = createTransport(
    { url: smtpUrl, connectionTimeout: 15_000, greetingTimeout: 15_000, socketTimeout: 60_000 },
    { from },
  );
  return {
    kind: 'smtp',
    async send(mail) {
      await transport.sendMail({ to: mail.to, subject: mail.subject, text: mail.text });
    },
    close: () => transport.close(),
  };
}

export function createOutboxMailer(sql: Sql): Mailer {
  return {
    kind: 'outbox',
    async send(mail) {
      await sql`
        insert into dev_outbox (to_address, subject, body) values (${mail.to}, ${mail.subject}, ${mail.text})`;
    },
    close() {},
  };
}

/** What createMailer needs: the config's mail settings and the SMTP URL loaded from the operator secrets. */
export type MailSettings = Pick<Config, 'env' | 'mailFrom'> & { readonly smtpUrl: string | undefined };

export function createMailer(settings: MailSettings, sql: Sql): Mailer {
  if (settings.smtpUrl !== undefined) return createSmtpMailer(settings.smtpUrl, settings.mailFrom);
  if (settings.env === 'production') throw new Error('production sends mail over SMTP: set ENCLAVE_SMTP_URL');
  return createOutboxMailer(sql);
}
