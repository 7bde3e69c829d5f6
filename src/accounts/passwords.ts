import { randomBytes, type ScryptOptions, scryptSync, timingSafeEqual } from 'node:crypto';

// ACC-2: scrypt with a random per-user salt, stored with its parameters in a
// PHC-style string ($scrypt$ln=17,r=8,p=1$salt$hash) so they can be raised
// later: a login whose hash has older parameters is re-hashed.
//
// These functions are synchronous on purpose: they run inside the password
// pool's worker threads (password-pool.ts), never on the event loop and never
// on libuv's thread pool, which file reads and dns.lookup need.

export interface ScryptParams {
  /** log2 of the CPU/memory cost N. */
  readonly ln: number;
  readonly r: number;
  readonly p: number;
}

export const CURRENT_PARAMS: ScryptParams = { ln: 17, r: 8, p: 1 };
const KEY_LENGTH = 32;
const SALT_LENGTH = 16;
export const MAX_PASSWORD_BYTES = 1024;

/** Bytes one scrypt derivation holds while it runs: 128·N·r (128 MiB at the current parameters). */
export function scryptMemoryBytes(params: ScryptParams = CURRENT_PARAMS): number {
  return 128 * 2 ** params.ln * params.r;
}

function derive(password: string, salt: Buffer, params: ScryptParams): Buffer {
  const options: ScryptOptions = {
    N: 2 ** params.ln,
    r: params.r,
    p: params.p,
    // scrypt needs 128·N·r bytes; leave head-room over that.
    maxmem: 2 * scryptMemoryBytes(params),
  };
  return scryptSync(password.normalize('NFKC'), salt, KEY_LENGTH, options);
}

function phc(params: ScryptParams, salt: Buffer, key: Buffer): string {
  return `$scrypt$ln=${params.ln},r=${params.r},p=${params.p}$${salt.toString('base64url')}$${key.toString('base64url')}`;
}

export function hashPasswordSync(password: string, params: ScryptParams = CURRENT_PARAMS): string {
  const salt = randomBytes(SALT_LENGTH);
  return phc(params, salt, derive(password, salt, params));
}

interface ParsedHash {
  readonly params: ScryptParams;
  readonly salt: Buffer;
  readonly key: Buffer;
}

function parseHash(stored: string): ParsedHash | undefined {
  const match = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(
    stored,
  );
  if (match === null) return undefined;
  const [, ln, r, p, salt, key] = match;
  const params = { ln: Number(ln), r: Number(r), p: Number(p) };
  // Not a hash we wrote: out of these bounds scrypt throws (ln of 0 or over 31), silently uses its defaults
  // (r or p of 0), or would need gigabytes.
  if (params.ln < 1 || params.ln > 20 || params.r < 1 || params.r > 16 || params.p < 1 || params.p > 4) {
    return undefined;
  }
  return {
    params,
    salt: Buffer.from(salt ?? '', 'base64url'),
    key: Buffer.from(key ?? '', 'base64url'),
  };
}

export interface PasswordCheck {
  readonly ok: boolean;
  /** The stored hash uses parameters weaker than the current ones. */
  readonly needsRehash: boolean;
}

/** `current`: the parameters new hashes get; a matching hash with weaker ones needs a rehash. */
export function verifyPasswordSync(
  password: string,
  stored: string,
  current: ScryptParams = CURRENT_PARAMS,
): PasswordCheck {
  const parsed = parseHash(stored);
  if (parsed === undefined) return { ok: false, needsRehash: false };
  const key = derive(password, parsed.salt, parsed.params);
  // Constant-time: the attacker controls the password, so no early exit on the first differing byte.
  const ok = key.length === parsed.key.length && timingSafeEqual(key, parsed.key);
  const { ln, r, p } = parsed.params;
  return { ok, needsRehash: ok && (ln < current.ln || r < current.r || p < current.p) };
}

/** Per parameter set, a stored hash that no password matches: random salt and key. */
const dummyHashes = new Map<string, string>();

/**
 * A login for an account that does not exist still pays for one scrypt at
 * the current parameters, the same work as a wrong password, so timing does
 * not tell whether the account exists (ACC-6).
 */
export function burnPasswordCheckSync(password: string, current: ScryptParams = CURRENT_PARAMS): void {
  const id = `${current.ln},${current.r},${current.p}`;
  let dummy = dummyHashes.get(id);
  if (dummy === undefined) {
    dummy = phc(current, randomBytes(SALT_LENGTH), randomBytes(KEY_LENGTH));
    dummyHashes.set(id, dummy);
  }
  verifyPasswordSync(password, dummy, current);
}
