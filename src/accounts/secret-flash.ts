// POST-redirect-GET for the two forms that make a secret (a new API token, a
// new invite link): the POST keeps the secret here and answers 303, and the
// GET that follows takes it, once. A reload of that page, or of the POST's
// answer, cannot mint a second token or show the first again. The secret is
// kept in memory only (never in a URL, a cookie or a log), per session and
// per kind, for a few minutes; a server restart in between loses it, and the
// user makes a new one.

export type FlashKind = 'token' | 'invite';

const TTL_MS = 5 * 60_000;
// One entry per signed-in session and kind at most; the cap bounds memory if many sessions make secrets and never read them.
const MAX_ENTRIES = 10_000;

interface Entry<T> {
  readonly value: T;
  readonly expires: number;
}

export interface SecretFlash<T> {
  /** Keeps `value` for the next take by `owner` (a session or token id); replaces an untaken one. */
  put(owner: string, value: T): void;
  /** The value kept for `owner`, removed as it is read; undefined when none or expired. */
  take(owner: string): T | undefined;
}

export function createSecretFlash<T>(now: () => number = Date.now): SecretFlash<T> {
  const entries = new Map<string, Entry<T>>();
  return {
    put(owner, value) {
      entries.delete(owner);
      const at = now();
      for (const [key, entry] of entries) {
        // Map order is insertion order: the first live entry ends the sweep once under the cap.
        if (entry.expires > at && entries.size < MAX_ENTRIES) break;
        entries.delete(key);
      }
      entries.set(owner, { value, expires: at + TTL_MS });
    },
    take(owner) {
      const entry = entries.get(owner);
      entries.delete(owner);
      return entry !== undefined && entry.expires > now() ? entry.value : undefined;
    },
  };
}
