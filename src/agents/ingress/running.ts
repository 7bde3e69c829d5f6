// AGT-3: which instance a subdomain names, as the ingress routes by it. The
// row is the truth and no other process tells the ingress of a change, so a
// running instance's lookup is reused for `ttlMs` at most, counted from the
// moment the lookup was sent (the row it read is no older than that): a name
// whose row is deleted or stops being running is served at most `ttlMs`
// longer. Only running ones are kept: every other answer (404) asks the
// database again, so it takes the same time whether or not the name exists.
//
// So that a busy instance does not wait on the database every `ttlMs`, a name
// used in the second half of its time is looked up again in the background
// (one such lookup per name at once); until it answers, the entry is still
// served, within its own time only. Of the lookups of a name, the one sent
// last decides (one sent earlier that answers after it changes nothing): a
// running answer replaces the entry, any other removes it.

export interface RunningInstances {
  /** The running instance's agent id while a lookup still valid says so, else undefined (then ask `lookup`). */
  cached(subdomain: string): string | undefined;
  /** The running instance's agent id, or undefined when the name is unknown or its instance is not running. */
  lookup(subdomain: string): Promise<string | undefined>;
  /** Drops what is known of a name (its socket refused): the next request asks the database. */
  forget(subdomain: string): void;
}

export interface RunningInstancesDeps {
  /** The agent id of the instance the row names if its state is running, else undefined. */
  read(subdomain: string): Promise<string | undefined>;
  readonly ttlMs: number;
  /** Names kept at most; the oldest entry makes room. */
  readonly size: number;
  /** Milliseconds on a monotonic clock (performance.now by default). */
  readonly now?: () => number;
}

interface Entry {
  readonly agentId: string;
  /** When the lookup that found it was sent. */
  readonly sent: number;
}

/** A name's lookups in flight, and when the latest one that answered was sent. */
interface InFlight {
  count: number;
  latest: number;
}

export function createRunningInstances(deps: RunningInstancesDeps): RunningInstances {
  const now = deps.now ?? (() => performance.now());
  const entries = new Map<string, Entry>();
  /** Names with lookups in flight (so a lookup answering after a later one changes nothing). */
  const inFlight = new Map<string, InFlight>();
  /** Names with a background lookup in flight. */
  const refreshing = new Set<string>();

  async function read(subdomain: string): Promise<string | undefined> {
    const sent = now();
    let flight = inFlight.get(subdomain);
    if (flight === undefined) {
      flight = { count: 0, latest: Number.NEGATIVE_INFINITY };
      inFlight.set(subdomain, flight);
    }
    flight.count++;
    try {
      const agentId = await deps.read(subdomain);
      // A lookup sent later has answered already: it is the newer truth.
      if (sent < flight.latest) return agentId;
      flight.latest = sent;
      entries.delete(subdomain);
      if (agentId !== undefined) {
        // Bounded: the oldest entry makes room (a Map iterates in insertion order).
        if (entries.size >= deps.size) entries.delete(entries.keys().next().value ?? '');
        entries.set(subdomain, { agentId, sent });
      }
      return agentId;
    } finally {
      if (--flight.count === 0) inFlight.delete(subdomain);
    }
  }

  function cached(subdomain: string): string | undefined {
    const entry = entries.get(subdomain);
    if (entry === undefined) return undefined;
    const age = now() - entry.sent;
    if (age >= deps.ttlMs) {
      entries.delete(subdomain);
      return undefined;
    }
    if (age >= deps.ttlMs / 2 && !refreshing.has(subdomain)) {
      refreshing.add(subdomain);
      // A failed lookup changes nothing: the entry ends at its time (the next use tries again).
      read(subdomain)
        .catch(() => undefined)
        .finally(() => refreshing.delete(subdomain));
    }
    return entry.agentId;
  }

  return {
    cached,
    async lookup(subdomain) {
      return cached(subdomain) ?? (await read(subdomain));
    },
    forget(subdomain) {
      entries.delete(subdomain);
      // Lookups sent before this do not bring it back.
      const flight = inFlight.get(subdomain);
      if (flight !== undefined) flight.latest = now();
    },
  };
}
