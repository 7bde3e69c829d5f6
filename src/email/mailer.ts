import { createTransport } from 'nodemailer';
import type { Sql } from 'postgres';
import type { Config } from '../config.ts';

// Outgoing mail. With ENCLAVE_SMTP_URL set, messages go out over SMTP
// (nodemailer); without it (development only: config refuses production
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

export function createMailer(config: Pick<Config, 'env' | 'smtpUrl' | 'mailFrom'>, sql: Sql): Mailer {
  if (config.smtpUrl !== undefined) return createSmtpMailer(config.smtpUrl, config.mailFrom);
  if (config.env === 'production') throw new Error('production sends mail over SMTP: set ENCLAVE_SMTP_URL');
  return createOutboxMailer(sql);
}
