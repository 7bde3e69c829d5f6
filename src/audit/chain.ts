import { hash } from 'node:crypto';
import { AuditError, type AuditErrorCode, isAuditError } from './errors.ts';
import {
  type AuditEvent,
  GENESIS_HASH,
  HASH_LENGTH,
  parseCanonicalEvent,
  readCanonicalEvent,
} from './event.ts';
import { isTenantId } from './event-fields.ts';

// Verifying a tenant's chain (AUD-5): every link, seq continuity, the tenant,
// and that each hashed text is exactly canonical. Streaming: the offline
// verifier pushes a million records through one ChainVerifier and keeps only
// the head, so per-record work is one pass over the text (readCanonicalEvent:
// canonical form and fields; `data` is built only if read) and one SHA-256
// over a reused buffer, with no Buffer allocated.

/** One stored event as an export carries it: the hashed text and its hash (raw or lowercase hex). */
export interface ChainRecord {
  readonly canonical: string;
  readonly hash: Uint8Array | string;
}

export interface ChainOptions {
  /** The tenant whose chain this must be. */
  readonly tenant: string;
  /** The seq of the first record; default 1. */
  readonly expectFirstSeq?: number;
  /** The hash the first record chains from; default GENESIS_HASH, required when expectFirstSeq > 1. */
  readonly expectPrevHash?: Uint8Array;
}

export interface ChainHead {
  readonly seq: number;
  readonly hash: Buffer;
}

export type ChainFailureCode = Extract<
  AuditErrorCode,
  | 'chain_record_invalid'
  | 'chain_not_canonical'
  | 'chain_tenant_mismatch'
  | 'chain_seq_gap'
  | 'chain_hash_mismatch'
>;

export type ChainResult =
  /** `head` is { seq: expectFirstSeq - 1, hash: expectPrevHash } when there were no records. */
  | { readonly ok: true; readonly count: number; readonly head: ChainHead }
  /** `seq` is the first position that does not verify; `count` records before it did. */
  | {
      readonly ok: false;
      readonly seq: number;
      readonly code: ChainFailureCode;
      readonly reason: string;
      readonly count: number;
    };

export class ChainVerifier {
  readonly #tenant: string;
  /**
   * Values already found valid, so records repeating them skip re-checking their syntax:
   * the tenant (when it is a valid id), and the last accepted record's actor and action.
   */
  #known: { tenant: string | undefined; actor: string | undefined; action: string | undefined };
  #nextSeq: number;
  #count = 0;
  #failure: Extract<ChainResult, { ok: false }> | undefined;
  /**
   * Bytes 0–31 hold the previous hash, then UTF-8(canonical) is written after
   * them, so a link is hashed without allocating a Buffer: the digest comes
   * back as hex (compared with the stored hex as is) and is decoded in place
   * as the next link's prev_hash.
   */
  #scratch = Buffer.allocUnsafe(64 * 1024);

  constructor(options: ChainOptions) {
    const first = options.expectFirstSeq ?? 1;
    if (!Number.isSafeInteger(first) || first < 1) {
      throw new AuditError('event_invalid', 'expectFirstSeq must be a positive safe integer');
    }
    if (first > 1 && options.expectPrevHash === undefined) {
      throw new AuditError('event_invalid', 'a chain that does not start at seq 1 needs expectPrevHash');
    }
    const prev = options.expectPrevHash ?? GENESIS_HASH;
    if (prev.length !== HASH_LENGTH) throw new AuditError('event_invalid', 'expectPrevHash must be 32 bytes');
    this.#tenant = options.tenant;
    // Attacker-influenced (a bundle header): an invalid id is not trusted, and then matches no valid event.
    this.#known = {
      tenant: isTenantId(options.tenant) ? options.tenant : undefined,
      actor: undefined,
      action: undefined,
    };
    this.#nextSeq = first;
    this.#scratch.set(prev, 0);
  }

  /** Checks the next record; returns its event while the chain holds, undefined from the first failure on. */
  push(record: ChainRecord): AuditEvent | undefined {
    if (this.#failure !== undefined) return undefined;
    const seq = this.#nextSeq;
    // Attacker-controlled: the whole record. Invariant: a record is accepted only if
    // its text is canonical, names this tenant and the next seq, and hashes to its hash.
    let event = readCanonicalEvent(record.canonical, this.#known);
    if (event === undefined) {
      // The fast reader refused; the reference reader decides, and says why.
      try {
        event = parseCanonicalEvent(record.canonical);
      } catch (error) {
        const notCanonical = isAuditError(error) && error.code === 'jcs_not_canonical';
        const reason = error instanceof Error ? error.message : String(error);
        return this.#fail(seq, notCanonical ? 'chain_not_canonical' : 'chain_record_invalid', reason);
      }
    }
    if (event.tenant !== this.#tenant) {
      return this.#fail(seq, 'chain_tenant_mismatch', `event belongs to tenant ${event.tenant}`);
    }
    if (event.seq !== seq) {
      const why = event.seq < seq ? 'repeats an earlier seq' : 'skips ahead';
      return this.#fail(seq, 'chain_seq_gap', `expected seq ${seq}, found seq ${event.seq} (${why})`);
    }
    const digest = this.#hashLink(record.canonical);
    const mismatch = hashMismatch(digest, record.hash);
    if (mismatch !== undefined) return this.#fail(seq, mismatch.code, mismatch.reason);
    this.#scratch.write(digest, 0, HASH_LENGTH, 'hex');
    this.#known.actor = event.actor;
    this.#known.action = event.action;
    this.#nextSeq = seq + 1;
    this.#count++;
    return event;
  }

  result(): ChainResult {
    if (this.#failure !== undefined) return this.#failure;
    const head = Buffer.from(this.#scratch.subarray(0, HASH_LENGTH));
    return { ok: true, count: this.#count, head: { seq: this.#nextSeq - 1, hash: head } };
  }

  /** SHA-256(prev_hash ‖ UTF-8(canonical)) as lowercase hex. */
  #hashLink(canonical: string): string {
    // A UTF-16 code unit never takes more than 3 UTF-8 bytes.
    const needed = HASH_LENGTH + canonical.length * 3;
    if (this.#scratch.length < needed) {
      const larger = Buffer.allocUnsafe(needed);
      this.#scratch.copy(larger, 0, 0, HASH_LENGTH);
      this.#scratch = larger;
    }
    const written = this.#scratch.write(canonical, HASH_LENGTH, 'utf8');
    return hash('sha256', this.#scratch.subarray(0, HASH_LENGTH + written), 'hex');
  }

  #fail(seq: number, code: ChainFailureCode, reason: string): undefined {
    this.#failure = { ok: false, seq, code, reason: `seq ${seq}: ${reason}`, count: this.#count };
    return undefined;
  }
}

/** Verifies a whole chain; see ChainVerifier for the checks. */
export function verifyChain(records: Iterable<ChainRecord>, options: ChainOptions): ChainResult {
  const verifier = new ChainVerifier(options);
  for (const record of records) {
    if (verifier.push(record) === undefined) break;
  }
  return verifier.result();
}

/** `digest` is lowercase hex; `stored` is the record's hash, attacker-controlled. */
function hashMismatch(
  digest: string,
  stored: Uint8Array | string,
): { code: ChainFailureCode; reason: string } | undefined {
  if (typeof stored === 'string') {
    if (digest === stored) return undefined;
    if (!/^[0-9a-f]{64}$/.test(stored)) {
      return { code: 'chain_record_invalid', reason: 'stored hash is not 64 lowercase hex digits' };
    }
  } else {
    if (!(stored instanceof Uint8Array) || stored.length !== HASH_LENGTH) {
      return { code: 'chain_record_invalid', reason: 'stored hash is not 32 bytes' };
    }
    if (Buffer.from(stored.buffer, stored.byteOffset, HASH_LENGTH).toString('hex') === digest)
      return undefined;
  }
  return {
    code: 'chain_hash_mismatch',
    reason: 'stored hash ≠ SHA-256(previous hash ‖ canonical): this event or the one before it was altered',
  };
}
