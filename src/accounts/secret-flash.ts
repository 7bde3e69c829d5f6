import { hkdfSync } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { open, seal } from '../vault/service.ts';
import type { CookieSettings } from './principal.ts';

// POST-redirect-GET for the two forms that make a secret (a new API token, a
// new invite link): the POST puts the secret in a short-lived cookie and
// answers 303, and the GET that follows shows it and clears the cookie. A
// reload of that page, or of the POST's answer, cannot mint a second token or
// show the first again.
//
// The cookie, not server memory, so any server process can answer the GET
// (DESIGN.md: processes are stateless). It goes only to the browser that is
// being shown the secret anyway, and is sealed for that: AES-256-GCM under a
// key derived from the session key, bound to the session that made it (a
// cookie copied into another session opens to nothing), HttpOnly, SameSite
// Strict, sent only to the pages that show it, and expiring after 5 minutes.
// Never in a URL or a log.

export type FlashKind = 'token' | 'invite' | 'inbound-webhook' | 'webhook-endpoint' | 'recovery-codes';

const TTL_SECONDS = 5 * 60;
/** Where each kind's cookie is sent: only to the pages that show it. */
const PATHS: Readonly<Record<FlashKind, string>> = {
  token: '/dashboard/settings',
  invite: '/dashboard/settings',
  'inbound-webhook': '/dashboard/agents',
  'webhook-endpoint': '/dashboard/webhooks',
  'recovery-codes': '/profile/totp/recovery-codes',
};
const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface SecretFlash<T> {
  /** Sets the cookie carrying `value` for the next page `owner` (a session or token id) reads. */
  put(reply: FastifyReply, owner: string, value: T): void;
  /** The value carried for `owner`, clearing the cookie; undefined when none, expired, or not this owner's. */
  take(request: FastifyRequest, reply: FastifyReply, owner: string): T | undefined;
}

export function createSecretFlash<T>(
  kind: FlashKind,
  sessionKey: string,
  settings: CookieSettings,
  now: () => number = Date.now,
): SecretFlash<T> {
  const name = `enclave_flash_${kind}`;
  const key = Buffer.from(
    hkdfSync('sha256', sessionKey, Buffer.alloc(0), `enclave secret flash ${kind}`, 32),
  );
  const options = { httpOnly: true, sameSite: 'strict' as const, secure: settings.secure, path: PATHS[kind] };
  return {
    put(reply, owner, value) {
      const expires = Math.floor(now() / 1000) + TTL_SECONDS;
      const sealed = seal(key, Buffer.from(JSON.stringify({ expires, value })), Buffer.from(owner));
      const cookie = Buffer.concat([sealed.nonce, sealed.tag, sealed.ciphertext]).toString('base64url');
      reply.setCookie(name, cookie, { ...options, maxAge: TTL_SECONDS });
    },
    take(request, reply, owner) {
      const raw = request.cookies[name];
      if (raw === undefined) return undefined;
      reply.clearCookie(name, options);
      // Attacker-controlled: the whole cookie. Only a value sealed for this owner opens.
      const bytes = raw.length <= 8192 ? Buffer.from(raw, 'base64url') : Buffer.alloc(0);
      if (bytes.length <= IV_BYTES + TAG_BYTES) return undefined;
      try {
        const sealed = {
          nonce: bytes.subarray(0, IV_BYTES),
          tag: bytes.subarray(IV_BYTES, IV_BYTES + TAG_BYTES),
          ciphertext: bytes.subarray(IV_BYTES + TAG_BYTES),
        };
        const opened = open(key, sealed, Buffer.from(owner));
        const { expires, value } = JSON.parse(opened.toString('utf8')) as { expires: number; value: T };
        opened.fill(0);
        return expires > now() / 1000 ? value : undefined;
      } catch {
        return undefined;
      }
    },
  };
}
