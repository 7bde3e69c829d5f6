import type { Utf8ChainRecord } from './chain.ts';
import { decodeBase64, decodeHex } from './encoding.ts';

// The recovery bundle (AUD-5): one UTF-8 file of JSON lines, each ending in
// "\n". docs/audit-format.md is the specification; in order:
//
//   header       {"type":"header","format":"enclave-audit-bundle","version":1,"tenant":…,"origin":…,"checkpoint_key":…,"created_at":…}
//   checkpoint   {"type":"checkpoint","note":…,"leaves":[{index,seq,hash,inclusion_proof}…],"consistency":[…]}
//   segment*     {"type":"segment","manifest":{…},"deleted_at":…,"included":…}, then, if included,
//                manifest.event_count event lines: the archive segment's own lines, byte for byte
//   event*       {"hash":"<64 hex>","prev_hash":"<64 hex>","event":<canonical text, verbatim>}
//
// An event line embeds the hashed text as a JSON value rather than as an
// escaped string, so its bytes are a slice of the line: nothing is unescaped
// or re-encoded between the file and the hash. Archive segments (AUD-7) are
// gzip files of the same event lines.

export const BUNDLE_FORMAT = 'enclave-audit-bundle';
export const BUNDLE_VERSION = 1;

export interface BundleHeader {
  readonly type: 'header';
  readonly format: typeof BUNDLE_FORMAT;
  readonly version: typeof BUNDLE_VERSION;
  /** The tenant whose chain this is, lowercase UUID. */
  readonly tenant: string;
  /** The checkpoint log's origin line, `<host>/enclave/audit`. */
  readonly origin: string;
  /** The operator's verifier key string (C2SP signed-note), or null if the server had none. */
  readonly checkpoint_key: string | null;
  readonly created_at: string;
}

/**
 * One of the tenant's leaves in the checkpoint: a commitment, made when the
 * leaf was appended, that event `seq` of the header's tenant had `hash`.
 */
export interface BundleLeaf {
  /** Leaf index in the log, decimal (a uint64). */
  readonly index: string;
  readonly seq: number;
  /** Lowercase hex of the head event's hash. */
  readonly hash: string;
  /** RFC 9162 inclusion proof of this leaf in the checkpoint's tree, base64 hashes, leaf-first. */
  readonly inclusion_proof: readonly string[];
}

export interface BundleConsistency {
  /** An earlier checkpoint's tree size, decimal. */
  readonly old_size: string;
  /** RFC 9162 consistency proof from old_size to the bundle's checkpoint, base64 hashes. */
  readonly proof: readonly string[];
}

export interface BundleCheckpoint {
  readonly type: 'checkpoint';
  /** The latest signed checkpoint note, or null when none exists yet. */
  readonly note: string | null;
  /** Every leaf of the tenant in the checkpoint's tree, in index order (empty if none). */
  readonly leaves: readonly BundleLeaf[];
  readonly consistency: readonly BundleConsistency[];
  /** The tenant's entry in the checkpoint's head map (AUD-8): absent when the tenant has no leaf yet. */
  readonly head_map?: BundleHeadMap;
}

/** Where the tenant's newest leaf sits in the head map, and the proof of it (docs/audit-format.md §2). */
export interface BundleHeadMap {
  readonly index: string;
  readonly size: string;
  readonly proof: readonly string[];
}

/** What an archive segment holds (AUD-7); also written beside it as `<segment>.manifest.json`. */
export interface SegmentManifest {
  readonly tenant: string;
  readonly first_seq: number;
  readonly last_seq: number;
  readonly event_count: number;
  /** prev_hash of event first_seq, lowercase hex. */
  readonly first_prev_hash: string;
  /** hash of event last_seq, lowercase hex. */
  readonly last_hash: string;
  /** SHA-256 of the segment's uncompressed bytes (its event lines, each with "\n"), lowercase hex. */
  readonly sha256: string;
  readonly first_ts: string;
  readonly last_ts: string;
  /** The segment's file name in the tenant's archive directory. */
  readonly file: string;
}

export interface BundleSegment {
  readonly type: 'segment';
  readonly manifest: SegmentManifest;
  /** When the segment was deleted past the cold window, or null. */
  readonly deleted_at: string | null;
  /** Whether the segment's event lines follow this line. */
  readonly included: boolean;
}

export interface EventLine {
  readonly hash: string;
  readonly prevHash: string;
  readonly canonical: string;
}

const HASH_PREFIX = '{"hash":"';
const PREV_PREFIX = '","prev_hash":"';
const EVENT_PREFIX = '","event":';
const PREV_AT = HASH_PREFIX.length + 64;
const EVENT_AT = PREV_AT + PREV_PREFIX.length + 64;
const CANONICAL_AT = EVENT_AT + EVENT_PREFIX.length;
const [HASH_PREFIX_BYTES, PREV_PREFIX_BYTES, EVENT_PREFIX_BYTES] = [
  HASH_PREFIX,
  PREV_PREFIX,
  EVENT_PREFIX,
].map((prefix) => Buffer.from(prefix, 'latin1')) as [Buffer, Buffer, Buffer];
const HEX64 = /^[0-9a-f]{64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UINT64 = /^(?:0|[1-9][0-9]{0,19})$/;

/** One event line, without its "\n". */
export function formatEventLine(hash: Uint8Array, prevHash: Uint8Array, canonical: string): string {
  const hex = (bytes: Uint8Array) =>
    Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
  return `${HASH_PREFIX}${hex(hash)}${PREV_PREFIX}${hex(prevHash)}${EVENT_PREFIX}${canonical}}`;
}

/** Whether a line is meant as an event line (the others are JSON objects with a "type"). */
export function isEventLine(line: string): boolean {
  return line.startsWith(HASH_PREFIX);
}

/**
 * Splits an event line by its fixed layout; undefined if it does not have it.
 * The two hashes are not checked for being hex here: the verifier accepts
 * `hash` only if it equals the hex digest it computes, and `prev_hash` only
 * if it equals the previous (computed) hash.
 */
export function parseEventLine(line: string): EventLine | undefined {
  // Attacker-controlled: the whole line. Only the layout is checked here; the
  // chain verifier decides whether the canonical text and hashes hold.
  if (
    !line.startsWith(HASH_PREFIX) ||
    !line.startsWith(PREV_PREFIX, PREV_AT) ||
    !line.startsWith(EVENT_PREFIX, EVENT_AT) ||
    line.charCodeAt(CANONICAL_AT) !== 0x7b || // {
    line.charCodeAt(line.length - 1) !== 0x7d // }
  ) {
    return undefined;
  }
  return {
    hash: line.slice(HASH_PREFIX.length, PREV_AT),
    prevHash: line.slice(PREV_AT + PREV_PREFIX.length, EVENT_AT),
    canonical: line.slice(CANONICAL_AT, -1),
  };
}

/**
 * parseEventLine on bytes: the event line bytes[start, end) (without its
 * "\n") as a record to hash in place, or undefined if it does not have the
 * layout. Nothing is decoded: the bytes between the fixed parts are checked
 * by the chain verifier (the hashes against the hex of the ones it computes).
 */
export function eventLineAt(bytes: Buffer, start: number, end: number): Utf8ChainRecord | undefined {
  if (
    end - start < CANONICAL_AT + 2 || // {"hash":"…","prev_hash":"…","event":{…}}
    !hasBytesAt(bytes, start, HASH_PREFIX_BYTES) ||
    !hasBytesAt(bytes, start + PREV_AT, PREV_PREFIX_BYTES) ||
    !hasBytesAt(bytes, start + EVENT_AT, EVENT_PREFIX_BYTES) ||
    bytes[start + CANONICAL_AT] !== 0x7b || // {
    bytes[end - 1] !== 0x7d // }
  ) {
    return undefined;
  }
  return {
    bytes,
    canonicalStart: start + CANONICAL_AT,
    canonicalEnd: end - 1,
    hashAt: start + HASH_PREFIX.length,
    prevHashAt: start + PREV_AT + PREV_PREFIX.length,
  };
}

function hasBytesAt(bytes: Uint8Array, at: number, expected: Uint8Array): boolean {
  for (let i = 0; i < expected.length; i++) if (bytes[at + i] !== expected[i]) return false;
  return true;
}

export type Parsed<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly reason: string };

const bad = (reason: string): Parsed<never> => ({ ok: false, reason });

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isText(value: unknown, max = 1000): value is string {
  return typeof value === 'string' && value.length > 0 && value.length <= max;
}

function isSeq(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1;
}

/** Strict base64 hashes of 32 bytes, or undefined. */
export function decodeProof(values: unknown): Buffer[] | undefined {
  if (!Array.isArray(values) || values.length > 128) return undefined;
  const hashes: Buffer[] = [];
  for (const value of values) {
    const bytes = typeof value === 'string' ? decodeBase64(value) : undefined;
    if (bytes?.length !== 32) return undefined;
    hashes.push(bytes);
  }
  return hashes;
}

export function parseHeader(value: unknown): Parsed<BundleHeader> {
  if (!isObject(value) || value.type !== 'header') return bad('the first line is not a bundle header');
  if (value.format !== BUNDLE_FORMAT) return bad(`the header's format is not "${BUNDLE_FORMAT}"`);
  if (value.version !== BUNDLE_VERSION)
    return bad(`bundle version ${String(value.version)} is not supported`);
  if (typeof value.tenant !== 'string' || !UUID.test(value.tenant)) return bad('header tenant is not a UUID');
  if (!isText(value.origin) || value.origin.includes('\n')) return bad('header origin is not one line');
  if (value.checkpoint_key !== null && !isText(value.checkpoint_key)) return bad('header checkpoint_key');
  if (!isText(value.created_at, 64)) return bad('header created_at');
  return { ok: true, value: value as unknown as BundleHeader };
}

export function parseCheckpointLine(value: unknown): Parsed<BundleCheckpoint> {
  if (!isObject(value) || value.type !== 'checkpoint') return bad('the second line is not a checkpoint line');
  if (value.note !== null && !isText(value.note, 1024 * 1024)) return bad('checkpoint note');
  if (!Array.isArray(value.leaves) || value.leaves.length > 10_000_000) return bad('checkpoint leaves');
  for (const leaf of value.leaves) {
    if (!isObject(leaf)) return bad('a checkpoint leaf is not an object');
    if (typeof leaf.index !== 'string' || !UINT64.test(leaf.index)) {
      return bad('leaf index is not a decimal uint64');
    }
    if (!isSeq(leaf.seq)) return bad('leaf seq is not a positive integer');
    if (typeof leaf.hash !== 'string' || !HEX64.test(leaf.hash)) return bad('leaf hash is not 64 hex digits');
    if (decodeProof(leaf.inclusion_proof) === undefined) {
      return bad('a leaf inclusion_proof is not a list of base64 hashes');
    }
  }
  if (!Array.isArray(value.consistency) || value.consistency.length > 1000) return bad('consistency');
  for (const entry of value.consistency) {
    if (!isObject(entry) || typeof entry.old_size !== 'string' || !UINT64.test(entry.old_size)) {
      return bad('consistency old_size is not a decimal uint64');
    }
    if (decodeProof(entry.proof) === undefined)
      return bad('a consistency proof is not a list of base64 hashes');
  }
  const map = value.head_map;
  if (
    map !== undefined &&
    (!isObject(map) ||
      typeof map.index !== 'string' ||
      !UINT64.test(map.index) ||
      typeof map.size !== 'string' ||
      !UINT64.test(map.size) ||
      decodeProof(map.proof) === undefined)
  ) {
    return bad('head_map is not {index, size, proof}');
  }
  return { ok: true, value: value as unknown as BundleCheckpoint };
}

export function parseManifest(value: unknown): Parsed<SegmentManifest> {
  if (!isObject(value)) return bad('manifest is not an object');
  const { tenant, first_seq, last_seq, event_count, first_prev_hash, last_hash, sha256 } = value;
  if (typeof tenant !== 'string' || !UUID.test(tenant)) return bad('manifest tenant is not a UUID');
  if (!isSeq(first_seq) || !isSeq(last_seq) || last_seq < first_seq) return bad('manifest seq range');
  if (event_count !== last_seq - first_seq + 1) return bad('manifest event_count ≠ last_seq − first_seq + 1');
  for (const hex of [first_prev_hash, last_hash, sha256]) {
    if (typeof hex !== 'string' || !HEX64.test(hex))
      return bad('manifest hashes must be 64 lowercase hex digits');
  }
  if (!isText(value.first_ts, 64) || !isText(value.last_ts, 64) || !isText(value.file, 200)) {
    return bad('manifest first_ts, last_ts or file');
  }
  return { ok: true, value: value as unknown as SegmentManifest };
}

export function parseSegmentLine(value: unknown): Parsed<BundleSegment> {
  if (!isObject(value) || value.type !== 'segment') return bad('not a segment line');
  const manifest = parseManifest(value.manifest);
  if (!manifest.ok) return manifest;
  if (value.deleted_at !== null && !isText(value.deleted_at, 64)) return bad('segment deleted_at');
  if (typeof value.included !== 'boolean') return bad('segment included must be true or false');
  return { ok: true, value: value as unknown as BundleSegment };
}

/** Decodes lowercase hex of 32 bytes (already checked by the parsers above). */
export function hashFromHex(hex: string): Buffer {
  const bytes = decodeHex(hex);
  if (bytes?.length !== 32) throw new TypeError('not 64 lowercase hex digits');
  return bytes;
}
