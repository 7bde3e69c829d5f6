import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

// ACC-5: OWASP's device cookie ("Slow Down Online Guessing Attacks with Device
// Cookies"). A browser that signed in to an account gets a cookie naming that
// account's login and a random nonce, MACed with the session key. Presented
// with a sign-in to the same login, it takes the browser out of the account's
// shared failure bucket, so an attacker spraying wrong passwords cannot lock
// the owner out; the cookie's own failures are counted by its nonce instead.
//
// Value: `d1.<username>.<nonce>.<expires, unix seconds>.<mac>`, where mac is
// HMAC-SHA256(session key, label ‖ the four fields before it). Usernames are
// [a-z0-9_-] and the nonce and mac base64url, so '.' never occurs inside a field.

export const DEVICE_COOKIE = 'enclave_device';
export const DEVICE_COOKIE_DAYS = 30;
/** Sent only with sign-in requests: no other route reads it. */
export const DEVICE_COOKIE_PATH = '/login';

const VERSION = 'd1';
// Domain separation: the session key also signs session cookies; this MAC cannot be mistaken for one.
const LABEL = 'enclave device cookie\n';
const USERNAME = /^[a-z0-9_-]{1,64}$/;
const NONCE = /^[A-Za-z0-9_-]{22}$/;
const EXPIRES = /^[0-9]{1,12}$/;
const MAC = /^[A-Za-z0-9_-]{43}$/;

export interface DeviceClaim {
  /** The username the cookie was issued to. */
  readonly username: string;
  /** Keys the cookie's own failure bucket. */
  readonly nonce: string;
}

export interface DeviceCookies {
  /** A fresh cookie value for a browser that has just signed in as `username`. */
  issue(username: string): string;
  /** The claim of an authentic, unexpired cookie; undefined for anything else. */
  verify(value: string | undefined): DeviceClaim | undefined;
}

export function createDeviceCookies(sessionKey: string, now: () => number = Date.now): DeviceCookies {
  const mac = (payload: string) =>
    createHmac('sha256', sessionKey).update(LABEL).update(payload).digest('base64url');
  return {
    issue(username) {
      const expires = Math.floor(now() / 1000) + DEVICE_COOKIE_DAYS * 86400;
      const payload = `${VERSION}.${username}.${randomBytes(16).toString('base64url')}.${expires}`;
      return `${payload}.${mac(payload)}`;
    },
    verify(value) {
      // The whole value is attacker-controlled: shape first, then a constant-time MAC check, then expiry.
      if (value === undefined || value.length > 200) return undefined;
      const [version, username, nonce, expires, tag, ...rest] = value.split('.');
      if (
        version !== VERSION ||
        rest.length > 0 ||
        username === undefined ||
        !USERNAME.test(username) ||
        nonce === undefined ||
        !NONCE.test(nonce) ||
        expires === undefined ||
        !EXPIRES.test(expires) ||
        tag === undefined ||
        !MAC.test(tag)
      ) {
        return undefined;
      }
      const expected = Buffer.from(mac(`${version}.${username}.${nonce}.${expires}`), 'base64url');
      if (!timingSafeEqual(expected, Buffer.from(tag, 'base64url'))) return undefined;
      if (Number(expires) * 1000 <= now()) return undefined;
      return { username, nonce };
    },
  };
}
