import type { LinkForMail } from '../accounts/links.ts';
import type { Mail } from './mailer.ts';

// The text of the mails the platform sends. Links are built from the
// configured public URL, never from a request's Host header.

export function verificationMail(publicUrl: string, link: LinkForMail): Mail {
  return {
    to: link.to,
    subject: 'Confirm your email address for Enclave',
    text: `Hello ${link.username},

someone (we hope you) asked to make this address the email address of the
Enclave account "${link.username}". To confirm, open this link and press the button:

${publicUrl}/verify-email/${link.token}

The link works once and expires after 60 minutes. If you did not ask for
this, ignore this message: nothing changes until the link is used.
`,
  };
}

export function recoveryMail(publicUrl: string, link: LinkForMail): Mail {
  return {
    to: link.to,
    subject: 'Set a new password for Enclave',
    text: `Hello ${link.username},

someone (we hope you) asked to recover the Enclave account "${link.username}".
To set a new password, open this link:

${publicUrl}/recover/${link.token}

The link works once and expires after 60 minutes. Setting a new password
signs the account out everywhere. If you did not ask for this, ignore this
message: your password stays as it is.
${link.reference === null ? '' : `\nSupport reference: ${link.reference}\n`}`,
  };
}
