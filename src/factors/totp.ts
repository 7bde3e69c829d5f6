import { randomBytes } from 'node:crypto';
import { createTOTPKeyURI, verifyHOTP } from '@oslojs/otp';

// RFC 6238 time-based one-time codes, pure: SHA-1, 6 digits, 30-second
// steps, as every authenticator app reads them from an otpauth:// URI.
// A code is accepted in the step before, at or after the current one (±1,
// for clocks that drift and codes typed as they roll over), and only in a
// step later than the last one accepted: no code, and no earlier code, works
// twice.

export const TOTP_PERIOD_SECONDS = 30;
export const TOTP_DIGITS = 6;
/** RFC 4226 recommends at least 128 bits and suggests 160: SHA-1's block-friendly size. */
export const TOTP_SECRET_BYTES = 20;
const WINDOW_STEPS = 1n;
const ISSUER = 'Enclave';

export function newTotpSecret(): Buffer {
  return randomBytes(TOTP_SECRET_BYTES);
}

/** The otpauth:// URI an authenticator app scans: `otpauth://totp/Enclave:<username>?secret=…&issuer=Enclave&…`. */
export function otpauthUri(username: string, secret: Uint8Array): string {
  return createTOTPKeyURI(ISSUER, username, secret, TOTP_PERIOD_SECONDS, TOTP_DIGITS);
}

/** The secret in base32, as the URI carries it, for typing into an app that cannot scan. */
export function base32Of(uri: string): string {
  return new URL(uri).searchParams.get('secret') ?? '';
}

/** The RFC 6238 time step at `nowMs`. */
export function timeStep(nowMs: number): bigint {
  return BigInt(Math.floor(nowMs / 1000 / TOTP_PERIOD_SECONDS));
}

/** A typed code with the spaces people put in it removed; undefined unless it is exactly six digits. */
export function totpCodeOf(input: string): string | undefined {
  const code = input.replace(/[ \u00a0]/g, '');
  return /^[0-9]{6}$/.test(code) ? code : undefined;
}

/**
 * The step `code` belongs to, within ±1 of now and after `lastUsedStep`;
 * undefined when it matches none of them. `code` is attacker-controlled:
 * verifyHOTP compares it in constant time.
 */
export function acceptedStep(
  secret: Uint8Array,
  code: string,
  nowMs: number,
  lastUsedStep: bigint | null,
): bigint | undefined {
  const now = timeStep(nowMs);
  for (let step = now - WINDOW_STEPS; step <= now + WINDOW_STEPS; step++) {
    if (step < 0n || (lastUsedStep !== null && step <= lastUsedStep)) continue;
    if (verifyHOTP(secret, step, TOTP_DIGITS, code)) return step;
  }
  return undefined;
}
