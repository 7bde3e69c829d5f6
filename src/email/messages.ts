import type { InviteForMail } from '../accounts/invites.ts';
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

export function inviteMail(publicUrl: string, invite: InviteForMail): Mail {
  const who = invite.inviter === null ? 'Someone' : `"${invite.inviter}"`;
  return {
    to: invite.to,
    subject: `You are invited to join "${invite.tenantName}" on Enclave`,
    text: `Hello,

${who} invited this address to join "${invite.tenantName}" on Enclave. To make
your account, open this link:

${publicUrl}/signup?invite=${encodeURIComponent(invite.token)}

The link works once and expires on ${invite.expiresAt.toISOString()}. Signing
up with it also confirms this email address. If you do not know the sender,
ignore this message.
`,
  };
}

/** To an address that already has an account, in place of a second one (the inviter is not told). */
export function accountExistsMail(publicUrl: string, to: string): Mail {
  return {
    to,
    subject: 'You already have an Enclave account',
    text: `Hello,

someone opened an Enclave invite for this address and tried to make an
account with it. This address already has an account, so no second one was
made. To join the tenant you were invited to, ask whoever invited you to add
your existing account instead.

You can sign in at ${publicUrl}/login. If you did not try to sign up, ignore
this message: nothing has changed.
`,
  };
}

export function signInCodeMail(code: { to: string; username: string; code: string }): Mail {
  return {
    to: code.to,
    subject: `Your Enclave sign-in code: ${code.code}`,
    text: `Hello ${code.username},

someone (we hope you) signed in to the Enclave account "${code.username}" with its
password. To finish signing in, enter this code on the page that asked for it:

${code.code}

The code works once and expires after 10 minutes. If this was not you, your
password is known to someone else: change it from your profile.
`,
  };
}
