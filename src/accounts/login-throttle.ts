import { accountKey, RateLimitedError, type RateLimits } from '../http/rate-limits.ts';
import type { DeviceClaim } from './device-cookies.ts';

// ACC-5: who may try a password now, decided before any credential lookup.
//
// The rule (README "Sign-in limits" says the same):
// - Every attempt spends the client address's bucket (login_ip).
// - A browser presenting a device cookie issued to the login it types is
//   trusted: its failures are counted against that cookie only (login_device,
//   10 per 15 minutes). Past that the cookie is locked out and the attempt is
//   treated as untrusted. Spraying at the account never slows it.
// - Any other attempt is untrusted. Failures are counted per login name over
//   24 hours (login_account). The first 5 pass at once. Each later one is let
//   through only when no pause is running, and starts a pause before the next:
//   15 s after the 6th failure, doubling with each (30 s, 1 min, 2 min, 4 min,
//   8 min) up to 15 min. An attempt during a pause gets 429 with Retry-After,
//   the time left, and is not counted.
// - A successful sign-in gives its point back: only failures count.

export const LOGIN_THROTTLE = {
  freeFailures: 5,
  firstPauseSeconds: 15,
  maxPauseSeconds: 15 * 60,
} as const;

/** The pause that the `failures`-th counted failure starts (0 while still free). */
export function pauseAfterFailures(failures: number): number {
  const { freeFailures, firstPauseSeconds, maxPauseSeconds } = LOGIN_THROTTLE;
  if (failures <= freeFailures) return 0;
  return Math.min(maxPauseSeconds, firstPauseSeconds * 2 ** (failures - freeFailures - 1));
}

export interface LoginAdmission {
  /** Whether the device cookie exempted this attempt from the account's bucket. */
  readonly trusted: boolean;
  /** Gives back the point this attempt spent: call it once the password proved right. */
  succeeded(): Promise<void>;
}

type Limits = Pick<RateLimits, 'consume' | 'refund'>;

async function admitTrusted(rateLimits: Limits, device: DeviceClaim): Promise<LoginAdmission | undefined> {
  try {
    await rateLimits.consume('login_device', device.nonce);
  } catch (error) {
    // OWASP: a device cookie locked out by its own failures falls back to the untrusted path.
    if (error instanceof RateLimitedError) return undefined;
    throw error;
  }
  return { trusted: true, succeeded: () => rateLimits.refund('login_device', device.nonce) };
}

async function admitUntrusted(rateLimits: Limits, login: string): Promise<LoginAdmission> {
  const key = accountKey(login);
  const failures = await rateLimits.consume('login_account', key);
  const pause = pauseAfterFailures(failures);
  if (pause > 0) {
    try {
      // Atomic in the shared store: of concurrent attempts, at most one takes a free slot.
      await rateLimits.consume('login_account_pause', key, pause);
    } catch (error) {
      await rateLimits.refund('login_account', key);
      throw error;
    }
  }
  return { trusted: false, succeeded: () => rateLimits.refund('login_account', key) };
}

/**
 * Admits one sign-in attempt or throws RateLimitedError. `login` is what the
 * client typed and `device` its verified device cookie, both attacker-chosen:
 * the cookie exempts only when its MAC holds and it names this very login.
 */
export async function admitLogin(
  rateLimits: Limits,
  attempt: { login: string; ip: string; device: DeviceClaim | undefined },
): Promise<LoginAdmission> {
  await rateLimits.consume('login_ip', attempt.ip);
  const { device } = attempt;
  if (device !== undefined && device.username === attempt.login.trim().toLowerCase()) {
    const admitted = await admitTrusted(rateLimits, device);
    if (admitted !== undefined) return admitted;
  }
  return admitUntrusted(rateLimits, attempt.login);
}
