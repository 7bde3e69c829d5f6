import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  BUNDLE_FORMAT,
  BUNDLE_VERSION,
  type BundleCheckpoint,
  type BundleHeader,
  type BundleSegment,
  formatEventLine,
  type SegmentManifest,
} from '../../src/audit/bundle-format.ts';
import { canonicalEvent, eventHash, GENESIS_HASH } from '../../src/audit/event.ts';
import { headLeafHash } from '../../src/audit/leaf.ts';
import { consistencyProof, leafHash } from '../../src/audit/merkle.ts';
import { MerkleLevels } from '../../src/audit/merkle-levels.ts';
import { formatCheckpoint, signNote, verifierKeyString } from '../../src/audit/note.ts';

// Recovery bundles built with the pure audit code alone (no database): for
// the verifier's unit tests and the verifier benchmark.

export const ORIGIN = 'enclave.test/enclave/audit';

export interface SyntheticEvent {
  readonly seq: number;
  readonly canonical: string;
  readonly prevHash: Buffer;
  readonly hash: Buffer;
  readonly line: string;
}

export interface ChainState {
  seq: number;
  hash: Buffer;
}

/** The next event of a chain: a plausible login with a few data fields. */
export function nextEvent(
  tenant: string,
  state: ChainState,
  overrides: { action?: string; data?: Record<string, unknown>; ts?: string } = {},
): SyntheticEvent {
  const seq = state.seq + 1;
  const canonical = canonicalEvent({
    tenant,
    seq,
    ts: overrides.ts ?? new Date(Date.UTC(2026, 0, 1) + seq * 1000).toISOString(),
    actor: `user:${tenant}`,
    action: overrides.action ?? 'session.login',
    target: `session:${seq.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`,
    data: overrides.data ?? {
      ip: '203.0.113.7',
      method: 'password',
      user_agent: 'Mozilla/5.0 (X11; Linux x86_64)',
    },
  });
  const prevHash = state.hash;
  const hash = eventHash(prevHash, canonical);
  state.seq = seq;
  state.hash = hash;
  return { seq, canonical, prevHash, hash, line: formatEventLine(hash, prevHash, canonical) };
}

export interface CheckpointKey {
  readonly privateKey: KeyObject;
  readonly verifierKey: string;
}

export function checkpointKey(name = ORIGIN): CheckpointKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, verifierKey: verifierKeyString(name, publicKey) };
}

export interface LogOptions {
  readonly tenant: string;
  /** (seq, hash) of the tenant's heads to commit to, in order; other tenants' leaves are mixed in. */
  readonly heads: readonly ChainState[];
  readonly key: CheckpointKey;
  /** Leaves of other tenants before each of ours. */
  readonly othersBetween?: number;
}

export interface SyntheticLog {
  readonly leafHashes: Buffer[];
  readonly tenantLeaves: { index: number; seq: number; hash: Buffer }[];
}

export function syntheticLog(options: LogOptions): SyntheticLog {
  const leafHashes: Buffer[] = [];
  const tenantLeaves: SyntheticLog['tenantLeaves'] = [];
  for (const head of options.heads) {
    for (let i = 0; i < (options.othersBetween ?? 3); i++) {
      leafHashes.push(leafHash(createHash('sha256').update(`other ${leafHashes.length}`).digest()));
    }
    tenantLeaves.push({ index: leafHashes.length, seq: head.seq, hash: head.hash });
    leafHashes.push(headLeafHash({ tenant: options.tenant, seq: head.seq, hash: head.hash }));
  }
  return { leafHashes, tenantLeaves };
}

/** The signed note of the first `size` leaves. */
export function signedCheckpoint(
  log: SyntheticLog,
  size: number,
  key: CheckpointKey,
  origin = ORIGIN,
): string {
  const root = new MerkleLevels(log.leafHashes.slice(0, size)).root();
  return signNote(formatCheckpoint({ origin, size, root }), { name: origin, privateKey: key.privateKey });
}

export function headerLine(tenant: string, key: CheckpointKey | null, origin = ORIGIN): string {
  const header: BundleHeader = {
    type: 'header',
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    tenant,
    origin,
    checkpoint_key: key?.verifierKey ?? null,
    created_at: '2026-02-01T00:00:00.000Z',
  };
  return JSON.stringify(header);
}

/** The checkpoint line over the whole log, with every tenant leaf proven and proofs from `fromSizes`. */
export function checkpointLine(
  log: SyntheticLog,
  key: CheckpointKey,
  fromSizes: readonly number[] = [],
): string {
  const tree = new MerkleLevels(log.leafHashes);
  const line: BundleCheckpoint = {
    type: 'checkpoint',
    note: signedCheckpoint(log, log.leafHashes.length, key),
    leaves: log.tenantLeaves.map((leaf) => ({
      index: String(leaf.index),
      seq: leaf.seq,
      hash: leaf.hash.toString('hex'),
      inclusion_proof: tree.inclusionProof(leaf.index).map((hash) => hash.toString('base64')),
    })),
    consistency: fromSizes.map((size) => ({
      old_size: String(size),
      proof: consistencyProof(log.leafHashes, size).map((hash) => hash.toString('base64')),
    })),
  };
  return JSON.stringify(line);
}

/** A segment line and, if included, its lines, for events already made. */
export function segmentLines(
  tenant: string,
  events: readonly SyntheticEvent[],
  options: { included: boolean; deletedAt?: string | null },
): { lines: string[]; manifest: SegmentManifest } {
  const first = events[0] as SyntheticEvent;
  const last = events.at(-1) as SyntheticEvent;
  const sha256 = createHash('sha256');
  for (const event of events) sha256.update(`${event.line}\n`);
  const manifest: SegmentManifest = {
    tenant,
    first_seq: first.seq,
    last_seq: last.seq,
    event_count: events.length,
    first_prev_hash: first.prevHash.toString('hex'),
    last_hash: last.hash.toString('hex'),
    sha256: sha256.digest('hex'),
    first_ts: '2026-01-01T00:00:00.000Z',
    last_ts: '2026-01-01T00:00:00.000Z',
    file: `segment-${String(first.seq).padStart(16, '0')}-${String(last.seq).padStart(16, '0')}.jsonl.gz`,
  };
  const segment: BundleSegment = {
    type: 'segment',
    manifest,
    deleted_at: options.deletedAt ?? null,
    included: options.included,
  };
  return {
    lines: [JSON.stringify(segment), ...(options.included ? events.map((event) => event.line) : [])],
    manifest,
  };
}

export function genesis(): ChainState {
  return { seq: 0, hash: Buffer.from(GENESIS_HASH) };
}
