import { createHash } from 'node:crypto';
import pg from 'pg';
import { RateLimiterPostgres, RateLimiterRes } from 'rate-limiter-flexible';
import { type Credentials, connectionUrl, type DbTarget } from '../db/target.ts';
import { asDatabaseUnavailable, DB_TIMEOUT_DEFAULT_MS, pgPoolTimeouts } from '../db/timeouts.ts';
import { AppError } from '../errors.ts';
import type { Logger } from '../logger.ts';

// ACC-5, RLY-5: per-action buckets kept in PostgreSQL (rate_limits), so every
// server process on one database shares them. A bucket is consumed before
// the work it guards — for login, before any credential lookup.

export class RateLimitedError extends AppError<'rate_limited'> {
  readonly retryAfterSeconds: number;

  constructor(retryAfterSeconds: number) {
    super('rate_limited', `rate limited; retry after ${retryAfterSeconds} s`);
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

export const BUCKETS = {
  /** Sign-in attempts from one client address. */
  login_ip: { points: 20, seconds: 15 * 60 },
  /**
   * Failed sign-ins on one login name from browsers without its device cookie,
   * from anywhere. A counter only: the pause rule (accounts/login-throttle.ts)
   * slows these long before the cap, which is there so a count cannot grow without bound.
   */
  login_account: { points: 10_000, seconds: 24 * 60 * 60 },
  /** The pause an untrusted sign-in on one login name must wait out; each consume sets its own length. */
  login_account_pause: { points: 1, seconds: 15 * 60 },
  /** Failed sign-ins presenting one device cookie (keyed by its nonce): past this, the cookie exempts nothing. */
  login_device: { points: 10, seconds: 15 * 60 },
  /** Current-password checks by one signed-in user (the profile's password change). */
  password_check: { points: 10, seconds: 15 * 60 },
  /** First-code guesses while one signed-in user confirms an authenticator app (ACC-8). */
  totp_enrol: { points: 10, seconds: 15 * 60 },
  signup_ip: { points: 10, seconds: 60 * 60 },
  /**
   * ACC-8: second-step tries (email, TOTP, recovery codes, passkeys) from one client address, and
   * against one account. Reaching the step needs the first one passed, and a bucket empties itself
   * in 15 minutes: the worst anyone can do to a victim is delay its second step that long.
   */
  second_step_ip: { points: 60, seconds: 15 * 60 },
  second_step_account: { points: 20, seconds: 15 * 60 },
  /** Provider sign-in starts and callbacks from one client address (ACC-9): each reaches a provider. */
  identity_ip: { points: 60, seconds: 15 * 60 },
  recover_ip: { points: 5, seconds: 15 * 60 },
  /** Recovery requests naming one login, from anywhere. */
  recover_account: { points: 3, seconds: 60 * 60 },
  /** One-time link redemptions (recovery, verification) from one address. */
  link_ip: { points: 20, seconds: 15 * 60 },
  /** API token minting by one user. */
  token_mint: { points: 20, seconds: 60 * 60 },
  /** Email-change requests by one user: each checks a password and mails an address. */
  email_change: { points: 5, seconds: 60 * 60 },
  /** Audit proofs and bundles served to one user: each reads the checkpoint log. */
  audit_proof: { points: 60, seconds: 60 },
  /** Relay connection requests by one user (RLY-5): each reaches another tenant's owner. */
  relay_connect_user: { points: 20, seconds: 60 * 60 },
  /** Relay connection requests from one client address, whoever signs in there (an office may share one). */
  relay_connect_ip: { points: 600, seconds: 60 * 60 },
  /** Passkey options and answers (sign-in, second step) from one client address, before any lookup (ACC-5, ACC-8). */
  passkey_ip: { points: 60, seconds: 15 * 60 },
  /** Passkey sign-in answers for one account, once its credential names it, and its second steps' options. */
  passkey_account: { points: 30, seconds: 15 * 60 },
  /** Passkey registrations (options and answers) by one user. */
  passkey_register: { points: 30, seconds: 60 * 60 },
  // The relay's data plane (RLY-5): one bucket per action and per key kind (src/relay/rate-limits.ts).
  /** Threads started with one relay token: each wakes the target agent. */
  relay_thread_start_token: { points: 60, seconds: 60 },
  relay_thread_start_ip: { points: 600, seconds: 60 },
  /** Follow-up messages written with one relay token. */
  relay_follow_up_token: { points: 120, seconds: 60 },
  relay_follow_up_ip: { points: 1200, seconds: 60 },
  /** Thread reads (and closes, owner answers) with one thread token. */
  relay_read_token: { points: 600, seconds: 60 },
  relay_read_ip: { points: 3000, seconds: 60 },
  /** Thread tokens minted by one user. */
  relay_token_mint_user: { points: 60, seconds: 60 * 60 },
  relay_token_mint_ip: { points: 600, seconds: 60 * 60 },
} as const;

export type Bucket = keyof typeof BUCKETS;

export interface RateLimits {
  /**
   * Spends one point of `bucket` for `key` and returns the points spent in the
   * current window, this one included; throws RateLimitedError when none are
   * left. `seconds` sets the window's length when this consume opens it.
   */
  consume(bucket: Bucket, key: string, seconds?: number): Promise<number>;
  /** Gives back one point spent by consume (an attempt that turned out not to count). */
  refund(bucket: Bucket, key: string): Promise<void>;
  close(): Promise<void>;
}

/** Account keys are hashed so the table holds no login names. */
export function accountKey(login: string): string {
  return createHash('sha256').update(login.trim().toLowerCase()).digest('hex').slice(0, 32);
}

export function createRateLimits(
  target: DbTarget,
  credentials: Credentials,
  logger: Logger,
  timeoutMs = DB_TIMEOUT_DEFAULT_MS,
): RateLimits {
  const pool = new pg.Pool({
    connectionString: connectionUrl(target, credentials),
    max: 4,
    ...pgPoolTimeouts(timeoutMs),
  });
  pool.on('error', (error) => logger.warn({ err: error }, 'rate-limit connection error'));
  const limiters = new Map<Bucket, RateLimiterPostgres>();
  for (const [bucket, { points, seconds }] of Object.entries(BUCKETS) as [
    Bucket,
    { points: number; seconds: number },
  ][]) {
    limiters.set(
      bucket,
      new RateLimiterPostgres({
        storeClient: pool,
        storeType: 'pool',
        schemaName: 'enclave',
        tableName: 'rate_limits',
        tableCreated: true,
        // Expired rows are pruned by the maintenance cron job, not a timer in this process.
        clearExpiredByTimeout: false,
        keyPrefix: bucket,
        points,
        duration: seconds,
      }),
    );
  }
  const limiter = (bucket: Bucket): RateLimiterPostgres => {
    const found = limiters.get(bucket);
    if (found === undefined) throw new Error(`unknown rate-limit bucket ${bucket}`);
    return found;
  };
  return {
    async consume(bucket, key, seconds) {
      try {
        const spent = await limiter(bucket).consume(
          key.slice(0, 200),
          1,
          seconds === undefined ? {} : { customDuration: seconds },
        );
        return spent.consumedPoints;
      } catch (error) {
        if (error instanceof RateLimiterRes) {
          throw new RateLimitedError(Math.max(1, Math.ceil(error.msBeforeNext / 1000)));
        }
        // The store is the database: its connection failures are the database's.
        throw asDatabaseUnavailable(error, true) ?? error;
      }
    },
    async refund(bucket, key) {
      await limiter(bucket).reward(key.slice(0, 200), 1);
    },
    close: () => pool.end(),
  };
}
