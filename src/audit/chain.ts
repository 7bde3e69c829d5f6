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
// over a reused buffer, with no Buffer allocated. A record read from a file
// can come as bytes (pushUtf8): its canonical bytes are hashed as they are,
// and its hashes compared as the hex digits they are, without strings.

/** One stored event as an export carries it: the hashed text and its hash (raw or lowercase hex). */
export interface ChainRecord {
  readonly canonical: string;
  readonly hash: Uint8Array | string;
}

/**
 * A record inside a buffer, as an event line of a bundle holds one: its
 * canonical text as UTF-8 bytes, and its hash and prev_hash as lowercase hex
 * digits. The bytes must be valid UTF-8 (the caller checks), so that they are
 * exactly the encoding of the text they decode to.
 */
export interface Utf8ChainRecord {
  readonly bytes: Buffer;
  /** The canonical text is bytes[canonicalStart, canonicalEnd). */
  readonly canonicalStart: number;
  readonly canonicalEnd: number;
  /** Where the 64 hex digits of the record's hash start. */
  readonly hashAt: number;
  /** Where the 64 hex digits of the record's prev_hash start. */
  readonly prevHashAt: number;
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
   * Bytes 0–31 hold the previous hash, then UTF-8(canonical) is written or
   * copied after them, so a link is hashed without allocating a Buffer (hash()
   * returning a Buffer costs more than the SHA-256 itself): the digest comes
   * back as a string and is written in place as the next link's prev_hash.
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
    return this.#accept(event);
  }

  /**
   * push for a record given as bytes (Utf8ChainRecord): the same checks, and
   * also that its prev_hash is the previous hash. It only ever accepts: when
   * any check fails it returns undefined with nothing changed, and the caller
   * pushes the record as text, which fails it with the reason (so a reason
   * is worked out in one place only, push).
   */
  pushUtf8(record: Utf8ChainRecord): AuditEvent | undefined {
    if (this.#failure !== undefined) return undefined;
    const { bytes, canonicalStart, canonicalEnd } = record;
    // Attacker-controlled: every byte. Invariant: accepted only if push would accept the decoded record.
    const event = readCanonicalEvent(bytes.toString('utf8', canonicalStart, canonicalEnd), this.#known);
    if (event === undefined || event.tenant !== this.#tenant || event.seq !== this.#nextSeq) return undefined;
    if (!isHexOf(bytes, record.prevHashAt, this.#scratch, 0)) return undefined;
    const length = canonicalEnd - canonicalStart;
    this.#reserve(length);
    bytes.copy(this.#scratch, HASH_LENGTH, canonicalStart, canonicalEnd);
    // 'binary' (latin1, one character a byte) is the cheapest form hash() returns. The digest goes
    // after the previous hash, over canonical bytes no longer needed, and replaces it once it matches.
    const digest = hash('sha256', this.#scratch.subarray(0, HASH_LENGTH + length), 'binary');
    this.#scratch.write(digest, HASH_LENGTH, HASH_LENGTH, 'latin1');
    if (!isHexOf(bytes, record.hashAt, this.#scratch, HASH_LENGTH)) return undefined;
    this.#scratch.copyWithin(0, HASH_LENGTH, 2 * HASH_LENGTH);
    return this.#accept(event);
  }

  /** The hash of the last record accepted (or the one the chain starts from), in lowercase hex: failures leave it. */
  headHex(): string {
    return this.#scratch.toString('hex', 0, HASH_LENGTH);
  }

  result(): ChainResult {
    if (this.#failure !== undefined) return this.#failure;
    const head = Buffer.from(this.#scratch.subarray(0, HASH_LENGTH));
    return { ok: true, count: this.#count, head: { seq: this.#nextSeq - 1, hash: head } };
  }

  /** The record holds: the next one must carry the next seq, and its actor and action are known good. */
  #accept(event: AuditEvent): AuditEvent {
    this.#known.actor = event.actor;
    this.#known.action = event.action;
    this.#nextSeq = event.seq + 1;
    this.#count++;
    return event;
  }

  /** SHA-256(prev_hash ‖ UTF-8(canonical)) as lowercase hex. */
  #hashLink(canonical: string): string {
    // A UTF-16 code unit never takes more than 3 UTF-8 bytes.
    this.#reserve(canonical.length * 3);
    const written = this.#scratch.write(canonical, HASH_LENGTH, 'utf8');
    return hash('sha256', this.#scratch.subarray(0, HASH_LENGTH + written), 'hex');
  }

  /** Makes room for `length` bytes of canonical text after the previous hash. */
  #reserve(length: number): void {
    const needed = HASH_LENGTH + Math.max(length, HASH_LENGTH);
    if (this.#scratch.length >= needed) return;
    const larger = Buffer.allocUnsafe(needed);
    this.#scratch.copy(larger, 0, 0, HASH_LENGTH);
    this.#scratch = larger;
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

/** Each byte value's two lowercase hex digits as one number: (first digit's code << 8) | second's. */
const HEX_PAIRS = Uint16Array.from({ length: 256 }, (_, byte) => {
  const digits = byte.toString(16).padStart(2, '0');
  return (digits.charCodeAt(0) << 8) | digits.charCodeAt(1);
});

/** Whether hex[hexAt, hexAt + 64) are the lowercase hex digits of raw[rawAt, rawAt + 32). */
function isHexOf(hex: Uint8Array, hexAt: number, raw: Uint8Array, rawAt: number): boolean {
  for (let i = 0; i < HASH_LENGTH; i++) {
    const pair = ((hex[hexAt + 2 * i] ?? 0) << 8) | (hex[hexAt + 2 * i + 1] ?? 0);
    if (pair !== HEX_PAIRS[raw[rawAt + i] ?? 0]) return false;
  }
  return true;
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
