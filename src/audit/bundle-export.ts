import path from 'node:path';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import type { TenantSql } from '../db/tenant.ts';
import {
  BUNDLE_FORMAT,
  BUNDLE_VERSION,
  type BundleCheckpoint,
  type BundleHeader,
  type BundleSegment,
  formatEventLine,
  type SegmentManifest,
} from './bundle-format.ts';
import { latestCheckpoint, loadTenantProof, previousCheckpointSize } from './checkpoint-log.ts';
import type { AuditSigning } from './checkpoint-signing.ts';
import type { CheckpointPublisher } from './publisher.ts';
import { readIfExists } from './write-once.ts';

// Writes a tenant's recovery bundle (AUD-5; format in bundle-format.ts and
// docs/audit-format.md): the latest checkpoint with the tenant's leaf and
// proofs, its archive segments, then its events. Runs inside a transaction
// bound to the tenant (withTenant for the tenant's own download,
// serviceQuery for `enclave audit export`). A shared lock keeps the
// retention job from moving this tenant's events to the archive mid-export.

const gunzipAsync = promisify(gunzip);
const PAGE = 1000;

export type LineSink = (line: string) => Promise<void> | void;

export interface BundleSources {
  readonly signing: Pick<AuditSigning, 'origin' | 'verifierKey'>;
  readonly publisher: Pick<CheckpointPublisher, 'read'>;
  /** The archive root; the tenant's segments are in `<archiveDir>/<tenant>/`. */
  readonly archiveDir: string;
}

export interface BundleSummary {
  readonly events: number;
  readonly segments: number;
  readonly checkpointSize: bigint | undefined;
}

interface SegmentRow {
  first_seq: string;
  last_seq: string;
  first_prev_hash: string;
  last_hash: string;
  sha256: string;
  first_ts: Date;
  last_ts: Date;
  file: string;
  deleted_at: Date | null;
}

/** The tenant's entry in the head map of the latest checkpoint (same snapshot), with its proof; none without one. */
async function headMapOf(
  tx: TenantSql,
  tenantId: string,
  checkpointed: boolean,
): Promise<Pick<BundleCheckpoint, 'head_map'>> {
  if (!checkpointed) return {};
  const [map] = await tx<{ map_size: string; entry_index: string | null; proof: Buffer[] }[]>`
    select map_size::text, entry_index::text, proof from enclave.checkpoint_head_map(${tenantId}::uuid)`;
  if (map === undefined || map.entry_index === null) return {};
  return {
    head_map: {
      index: map.entry_index,
      size: map.map_size,
      proof: map.proof.map((hash) => hash.toString('base64')),
    },
  };
}

export async function writeAuditBundle(
  tx: TenantSql,
  tenantId: string,
  sources: BundleSources,
  sink: LineSink,
  options: { consistencyFrom?: readonly bigint[] } = {},
): Promise<BundleSummary> {
  await tx`select pg_advisory_xact_lock_shared(hashtext('enclave.audit_archive'), hashtext(${tenantId}::text))`;
  const latest = await latestCheckpoint(tx);
  const fromSizes = [...(options.consistencyFrom ?? [])];
  const previous = latest === undefined ? undefined : await previousCheckpointSize(tx, latest.size);
  if (previous !== undefined) fromSizes.push(previous);
  const proof = await loadTenantProof(
    tx,
    tenantId,
    latest === undefined ? {} : { checkpoint: latest, fromSizes },
  );
  const { checkpoint } = proof;
  // The note as published to write-once storage: what third parties hold, and what a verifier must accept.
  const note =
    checkpoint === undefined ? null : ((await sources.publisher.read(checkpoint.size)) ?? checkpoint.note);
  const header: BundleHeader = {
    type: 'header',
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    tenant: tenantId,
    origin: sources.signing.origin,
    checkpoint_key: sources.signing.verifierKey,
    created_at: new Date().toISOString(),
  };
  const checkpointLine: BundleCheckpoint = {
    type: 'checkpoint',
    note,
    leaves: proof.leaves.map((leaf) => ({
      index: leaf.index.toString(),
      seq: leaf.seq,
      hash: leaf.hash.toString('hex'),
      inclusion_proof: leaf.inclusion.map((hash) => hash.toString('base64')),
    })),
    consistency: proof.consistency.map(({ oldSize, proof: hashes }) => ({
      old_size: oldSize.toString(),
      proof: hashes.map((hash) => hash.toString('base64')),
    })),
    ...(await headMapOf(tx, tenantId, checkpoint !== undefined)),
  };
  await sink(JSON.stringify(header));
  await sink(JSON.stringify(checkpointLine));

  const segments = await tx<SegmentRow[]>`
    select s.first_seq::text, s.last_seq::text, encode(s.first_prev_hash, 'hex') as first_prev_hash,
           encode(s.last_hash, 'hex') as last_hash, encode(s.sha256, 'hex') as sha256, s.first_ts, s.last_ts, s.file,
           s.deleted_at
    from audit_archive_segments s
    -- A pending segment (AUD-7 phase 1 done, rows not yet deleted) is exported as its rows.
    where s.tenant_id = ${tenantId}::uuid and s.rows_deleted_at is not null order by s.first_seq`;
  for (const row of segments) await writeSegment(tenantId, row, sources.archiveDir, sink);

  let events = 0;
  let after = 0;
  for (;;) {
    const rows = await tx<{ seq: string; hash: Buffer; prev_hash: Buffer; canonical: string }[]>`
      select e.seq::text, e.hash, e.prev_hash, e.canonical from audit_events e
      where e.tenant_id = ${tenantId}::uuid and e.seq > ${after}::bigint
      order by e.seq limit ${PAGE}`;
    for (const row of rows) await sink(formatEventLine(row.hash, row.prev_hash, row.canonical));
    events += rows.length;
    if (rows.length < PAGE) break;
    after = Number(rows.at(-1)?.seq);
  }
  return { events, segments: segments.length, checkpointSize: checkpoint?.size };
}

export function segmentManifest(tenantId: string, row: SegmentRow): SegmentManifest {
  const [first, last] = [Number(row.first_seq), Number(row.last_seq)];
  return {
    tenant: tenantId,
    first_seq: first,
    last_seq: last,
    event_count: last - first + 1,
    first_prev_hash: row.first_prev_hash,
    last_hash: row.last_hash,
    sha256: row.sha256,
    first_ts: row.first_ts.toISOString(),
    last_ts: row.last_ts.toISOString(),
    file: row.file,
  };
}

async function writeSegment(
  tenantId: string,
  row: SegmentRow,
  archiveDir: string,
  sink: LineSink,
): Promise<void> {
  const manifest = segmentManifest(tenantId, row);
  // Included as stored, tampered or not: judging it is the verifier's job.
  const gz =
    row.deleted_at === null ? await readIfExists(path.join(archiveDir, tenantId, row.file)) : undefined;
  const text = gz === undefined ? undefined : (await gunzipAsync(gz)).toString('utf8');
  const line: BundleSegment = {
    type: 'segment',
    manifest,
    deleted_at: row.deleted_at?.toISOString() ?? null,
    included: text !== undefined,
  };
  await sink(JSON.stringify(line));
  if (text === undefined) return;
  const lines = text.endsWith('\n') ? text.slice(0, -1).split('\n') : text.split('\n');
  for (const eventLine of lines) await sink(eventLine);
}
