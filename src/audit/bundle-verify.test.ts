import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { createHash, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  type ChainState,
  checkpointKey,
  checkpointLine,
  genesis,
  headerLine,
  nextEvent,
  ORIGIN,
  type SyntheticEvent,
  segmentLines,
  signedCheckpoint,
  syntheticLog,
} from '../../test/helpers/audit-bundle.ts';
import type { SegmentManifest } from './bundle-format.ts';
import {
  BundleVerifier,
  type BundleVerifyOptions,
  repeatedMember,
  type VerifyReport,
} from './bundle-verify.ts';
import { headMapEntryHash, headMapExtension } from './leaf.ts';
import { inclusionProof, rootFromLeafHashes } from './merkle.ts';
import { formatCheckpoint, signNote } from './note.ts';

// The offline verifier on bundles built in memory (AUD-5, AUD-7, AUD-8). The
// same attacks through a real database are in test/audit-tamper.security.test.ts;
// here each check is pinned on its own: signature, key pinning, inclusion,
// tail truncation, consistency between checkpoints, archive segments. Every
// bundle is verified twice, as text (push) and as the bytes of a file
// (pushBytes, what enclave-verify does), and both must give the same report.

const tenant = randomUUID();
const key = checkpointKey();

function chain(count: number, state: ChainState = genesis()): SyntheticEvent[] {
  return Array.from({ length: count }, () => nextEvent(tenant, state));
}

function verify(lines: readonly string[], options: BundleVerifyOptions = {}): VerifyReport {
  const verifier = new BundleVerifier(options);
  for (const line of lines) if (!verifier.push(line)) break;
  const report = verifier.finish();
  const fromBytes = verifyBytes(Buffer.from(lines.map((line) => `${line}\n`).join('')), options);
  assert.deepEqual(fromBytes, report, 'read as bytes, the bundle has the report it has read as text');
  return report;
}

/** Verifies a bundle file's bytes as enclave-verify reads them: line by line, in place. */
function verifyBytes(bytes: Buffer, options: BundleVerifyOptions = {}): VerifyReport {
  const verifier = new BundleVerifier(options);
  const utf8 = isUtf8(bytes);
  for (let at = 0; at < bytes.length; ) {
    const end = bytes.indexOf(0x0a, at);
    if (!verifier.pushBytes(bytes, at, end, utf8)) break;
    at = end + 1;
  }
  return verifier.finish();
}

/** The chain's audit.archived record of a segment, as the archive function appends it. */
function archivedRecord(state: ChainState, m: SegmentManifest): SyntheticEvent {
  return nextEvent(tenant, state, {
    action: 'audit.archived',
    data: {
      event_count: m.event_count,
      first_prev_hash: m.first_prev_hash,
      first_seq: m.first_seq,
      last_hash: m.last_hash,
      last_seq: m.last_seq,
      segment_sha256: m.sha256,
    },
  });
}

function firstBad(report: VerifyReport): { seq: number | undefined; check: string; reason: string } {
  const problem = report.problems[0];
  assert.ok(problem !== undefined, 'expected a problem');
  return { seq: problem.seq, check: problem.check, reason: problem.reason };
}

/** Ten events; the log commits to heads 4 and 10. */
function standard() {
  const events = chain(10);
  const heads = [events[3], events[9]].map((e) => ({ seq: e?.seq ?? 0, hash: e?.hash ?? Buffer.alloc(32) }));
  const log = syntheticLog({ tenant, heads, key });
  return { events, log };
}

describe('enclave-verify core', () => {
  test('AUD-8: leaf seqs that go back between checkpoints (17, then 9, then 20) fail, though the chain passes every leaf', () => {
    const events = chain(20);
    const heads = [17, 9, 20].map((seq) => ({ seq, hash: events[seq - 1]?.hash ?? Buffer.alloc(32) }));
    const log = syntheticLog({ tenant, heads, key });
    const report = verify([headerLine(tenant, key), checkpointLine(log, key), ...events.map((e) => e.line)]);
    assert.equal(report.ok, false);
    assert.equal(firstBad(report).check, 'checkpoint');
    assert.equal(firstBad(report).seq, 9);
    assert.match(firstBad(report).reason, /head went back between two checkpoints/);
  });

  test('AUD-8: with a head map in the note, the bundle must prove the tenant’s newest listed leaf is its head there', () => {
    const { events, log } = standard();
    const entryOf = (seq: number) =>
      headMapEntryHash({ tenant, seq, hash: events[seq - 1]?.hash ?? Buffer.alloc(32) });
    const others = [createHash('sha256').update('a').digest(), createHash('sha256').update('b').digest()];
    const bundleWith = (headSeq: number, listed: number, entry: boolean) => {
      const entries = [others[0] as Buffer, entryOf(headSeq), others[1] as Buffer];
      const mapRoot = rootFromLeafHashes(entries);
      const text = formatCheckpoint({
        origin: ORIGIN,
        size: log.leafHashes.length,
        root: rootFromLeafHashes(log.leafHashes),
        extensions: [headMapExtension(3n, mapRoot)],
      });
      const line = JSON.parse(checkpointLine(log, key)) as {
        note: string;
        leaves: unknown[];
        head_map?: unknown;
      };
      line.note = signNote(text, { name: ORIGIN, privateKey: key.privateKey });
      line.leaves = line.leaves.slice(0, listed);
      if (entry) {
        line.head_map = {
          index: '1',
          size: '3',
          proof: inclusionProof(entries, 1).map((h) => h.toString('base64')),
        };
      }
      return verify([headerLine(tenant, key), JSON.stringify(line), ...events.map((e) => e.line)]);
    };
    assert.deepEqual(bundleWith(10, 2, true).problems, []);
    // The log's head map says seq 10, the bundle lists the leaves up to seq 4 only (the newer one hidden).
    const hidden = bundleWith(10, 1, true);
    assert.equal(firstBad(hidden).check, 'checkpoint');
    assert.match(firstBad(hidden).reason, /signed head map does not have seq 4 .* as this tenant's head/);
    assert.match(firstBad(bundleWith(10, 2, false)).reason, /no head map entry for this tenant/);
    // A checkpoint from before head maps: verified as before, with a note saying what it does not prove.
    const old = verify([headerLine(tenant, key), checkpointLine(log, key), ...events.map((e) => e.line)]);
    assert.equal(old.ok, true);
    assert.ok(old.notes.some((note) => /predates head maps/.test(note)));
  });

  test('AUD-8: a leaf an earlier bundle listed, missing from a later one (re-tagged to another tenant), fails', () => {
    const { events, log } = standard();
    const earlier = checkpointLine(log, key);
    const previousLeaves = {
      tenant,
      leaves: (JSON.parse(earlier) as { leaves: { index: string; seq: number; hash: string }[] }).leaves,
    };
    // The later bundle: head rolled back to 4, and the leaf of seq 10 no longer listed as this tenant's.
    const hidden = JSON.parse(earlier) as { leaves: unknown[] };
    hidden.leaves = hidden.leaves.slice(0, 1);
    const lines = [headerLine(tenant, key), JSON.stringify(hidden), ...events.slice(0, 4).map((e) => e.line)];
    assert.equal(
      verify(lines).ok,
      true,
      'alone, the later bundle looks whole: the attack this check catches',
    );
    const report = verify(lines, { previousLeaves });
    assert.equal(report.ok, false);
    assert.equal(firstBad(report).check, 'consistency');
    assert.match(
      firstBad(report).reason,
      /leaf \d+ \(seq 10\) of the earlier bundle is missing from this one/,
    );
    const other = verify(lines, { previousLeaves: { ...previousLeaves, tenant: randomUUID() } });
    assert.match(firstBad(other).reason, /earlier bundle is of another tenant/);
  });

  test('AUD-5: an intact bundle verifies: every event, both leaves, the signature', () => {
    const { events, log } = standard();
    const report = verify([headerLine(tenant, key), checkpointLine(log, key), ...events.map((e) => e.line)]);
    assert.deepEqual(report.problems, []);
    assert.equal(report.ok, true);
    assert.equal(report.eventsVerified, 10);
    assert.equal(report.head?.seq, 10);
    assert.equal(report.leaves, 2);
    assert.equal(report.committed?.seq, 10);
  });

  test('AUD-8: a bundle whose newest events are gone fails at the first missing seq', () => {
    const { events, log } = standard();
    const report = verify([
      headerLine(tenant, key),
      checkpointLine(log, key),
      ...events.slice(0, 7).map((e) => e.line),
    ]);
    assert.equal(report.ok, false);
    assert.deepEqual(firstBad(report).seq, 8);
    assert.equal(firstBad(report).check, 'completeness');
    assert.match(firstBad(report).reason, /missing .* commits to seq 10/);
  });

  test('AUD-8: a chain rewritten consistently from seq 6 on fails where the log committed to the old hash', () => {
    const { events, log } = standard();
    const state = { seq: 5, hash: events[4]?.hash ?? Buffer.alloc(32) };
    const rewritten = Array.from({ length: 5 }, () => nextEvent(tenant, state, { data: { forged: true } }));
    const lines = [...events.slice(0, 5), ...rewritten].map((e) => e.line);
    const report = verify([headerLine(tenant, key), checkpointLine(log, key), ...lines]);
    assert.equal(firstBad(report).seq, 10);
    assert.match(firstBad(report).reason, /not the one the checkpoint committed to/);
  });

  test('AUD-5: a note signed by another key fails against the bundled key and against a pinned key', () => {
    const { events, log } = standard();
    const other = checkpointKey();
    // The bundle names the honest key but carries a note the other key signed.
    const forged = JSON.parse(checkpointLine(log, other)) as { note: string };
    const line = JSON.stringify({ ...JSON.parse(checkpointLine(log, key)), note: forged.note });
    const report = verify([headerLine(tenant, key), line, ...events.map((e) => e.line)]);
    assert.equal(report.ok, false);
    assert.equal(firstBad(report).check, 'checkpoint');
    assert.match(firstBad(report).reason, /does not verify/);
    // A bundle entirely made with another key verifies on its own, but not with the operator's key pinned.
    const selfSigned = [headerLine(tenant, other), checkpointLine(log, other), ...events.map((e) => e.line)];
    assert.equal(verify(selfSigned).ok, true);
    const pinned = verify(selfSigned, { pinnedKey: key.verifierKey });
    assert.equal(pinned.ok, false);
    assert.match(firstBad(pinned).reason, /does not verify/);
  });

  test('AUD-4: a leaf with a proof that does not lead to the signed root is refused', () => {
    const { events, log } = standard();
    const line = JSON.parse(checkpointLine(log, key)) as { leaves: { inclusion_proof: string[] }[] };
    const leaf = line.leaves[1];
    assert.ok(leaf !== undefined);
    leaf.inclusion_proof = [...leaf.inclusion_proof].reverse();
    const report = verify([headerLine(tenant, key), JSON.stringify(line), ...events.map((e) => e.line)]);
    assert.equal(firstBad(report).check, 'inclusion');
    assert.equal(firstBad(report).seq, 10);
  });

  test('AUD-8: two leaves committing to different hashes for one seq prove a rewrite', () => {
    const events = chain(4);
    const head = events[3];
    assert.ok(head !== undefined);
    const log = syntheticLog({
      tenant,
      heads: [
        { seq: 4, hash: head.hash },
        { seq: 4, hash: Buffer.alloc(32, 7) },
      ],
      key,
    });
    const report = verify([headerLine(tenant, key), checkpointLine(log, key), ...events.map((e) => e.line)]);
    assert.equal(firstBad(report).seq, 4);
    assert.match(firstBad(report).reason, /two different hashes/);
  });

  test('AUD-5: a bundle without a checkpoint does not pass', () => {
    const events = chain(3);
    const line = JSON.stringify({ type: 'checkpoint', note: null, leaves: [], consistency: [] });
    const report = verify([headerLine(tenant, key), line, ...events.map((e) => e.line)]);
    assert.equal(report.ok, false);
    assert.match(firstBad(report).reason, /no checkpoint/);
    assert.equal(report.eventsVerified, 3, 'the chain itself was still checked');
  });

  test('AUD-8: the checkpoint must extend a previous one: consistent passes; rolled back, forked or unproven fails', () => {
    const { events, log } = standard();
    const size = log.leafHashes.length;
    const lines = (fromSizes: number[]) => [
      headerLine(tenant, key),
      checkpointLine(log, key, fromSizes),
      ...events.map((e) => e.line),
    ];
    const previous = signedCheckpoint(log, 5, key);
    assert.deepEqual(verify(lines([5]), { previousCheckpoint: previous }).problems, []);
    assert.equal(verify(lines([5]), { previousCheckpoint: previous }).previousSize, 5n);
    const missing = verify(lines([]), { previousCheckpoint: previous });
    assert.match(
      firstBad(missing).reason,
      /no consistency proof from size 5; export it again with --consistency-from 5/,
    );
    // A previous checkpoint larger than the bundle's: the log was rolled back.
    const bigger = syntheticLog({
      tenant,
      heads: [...log.tenantLeaves, { seq: 11, hash: Buffer.alloc(32) }],
      key,
    });
    const rollback = verify(lines([]), { previousCheckpoint: signedCheckpoint(bigger, size + 4, key) });
    assert.match(firstBad(rollback).reason, /older than the previous one .* rolled back/);
    // A previous checkpoint of another history of the same size: a fork.
    const fork = syntheticLog({
      tenant,
      heads: [{ seq: 1, hash: Buffer.alloc(32, 1) }],
      key,
      othersBetween: 4,
    });
    const forked = verify(lines([5]), { previousCheckpoint: signedCheckpoint(fork, 5, key) });
    assert.equal(firstBad(forked).check, 'consistency');
    assert.match(firstBad(forked).reason, /does not extend the previous one/);
  });

  test('AUD-7: archive segments and hot events verify as one chain; included segments are checked byte for byte', () => {
    const state = genesis();
    const archived = Array.from({ length: 6 }, () => nextEvent(tenant, state));
    const first = segmentLines(tenant, archived.slice(0, 3), {
      included: false,
      deletedAt: '2026-01-02T00:00:00.000Z',
    });
    const second = segmentLines(tenant, archived.slice(3), { included: true });
    const record = (m: SegmentManifest) => archivedRecord(state, m);
    // The first segment's file was deleted past the 24-month cold window, as the chain records.
    const deleted = (m: typeof first.manifest, ts: string) =>
      nextEvent(tenant, state, {
        action: 'audit.archive_deleted',
        data: { first_seq: m.first_seq, last_seq: m.last_seq, segment_sha256: m.sha256 },
        ts,
      });
    const hot = [
      record(first.manifest),
      record(second.manifest),
      deleted(first.manifest, '2028-01-02T00:00:00.000Z'),
      nextEvent(tenant, state, { ts: '2028-01-02T00:00:01.000Z' }),
    ];
    const log = syntheticLog({ tenant, heads: [{ ...state }], key });
    const head = [headerLine(tenant, key), checkpointLine(log, key)];
    const report = verify([...head, ...first.lines, ...second.lines, ...hot.map((e) => e.line)]);
    assert.deepEqual(report.problems, []);
    assert.equal(report.eventsVerified, 7, 'three archived in the bundle, four hot');
    assert.equal(report.eventsByManifestOnly, 3);
    assert.deepEqual(report.segments, { total: 2, included: 1, recorded: 2 });

    // One byte of an included segment changed (and re-hashed, so the chain itself holds): its digest fails.
    const tamperedEvents = [...archived.slice(0, 3)];
    const tState = { seq: 3, hash: archived[2]?.hash ?? Buffer.alloc(32) };
    const replaced = Array.from({ length: 3 }, () => nextEvent(tenant, tState, { data: { x: 1 } }));
    const tamperedLines = [second.lines[0] as string, ...replaced.map((e) => e.line)];
    const broken = verify([...head, ...first.lines, ...tamperedLines, ...hot.map((e) => e.line)]);
    assert.equal(broken.ok, false);
    assert.equal(firstBad(broken).check, 'archive');
    assert.equal(tamperedEvents.length, 3);

    // A segment the chain does not record, or records differently.
    const other = segmentLines(tenant, archived.slice(3), { included: true });
    const wrongManifest = JSON.parse(other.lines[0] as string) as { manifest: { sha256: string } };
    wrongManifest.manifest.sha256 = '0'.repeat(64);
    const mismatched = verify([
      ...head,
      ...first.lines,
      JSON.stringify(wrongManifest),
      ...second.lines.slice(1),
      ...hot.map((e) => e.line),
    ]);
    assert.equal(mismatched.ok, false);
    assert.equal(firstBad(mismatched).check, 'archive');
  });

  test('AUD-7: a segment missing from the bundle fails unless an audit.archive_deleted event past the cold window accounts for it (a file deleted early, a segment marked as not included)', () => {
    const state = genesis();
    const archived = Array.from({ length: 3 }, () => nextEvent(tenant, state));
    const withheld = segmentLines(tenant, archived, { included: false });
    const m = withheld.manifest;
    const record = archivedRecord(state, m);
    const bundle = (hot: readonly SyntheticEvent[]) => {
      const log = syntheticLog({ tenant, heads: [{ ...state }], key });
      return verify([
        headerLine(tenant, key),
        checkpointLine(log, key),
        ...withheld.lines,
        ...[record, ...hot].map((e) => e.line),
      ]);
    };
    const early = { ...state };
    const unaccounted = bundle([]);
    assert.equal(unaccounted.ok, false);
    assert.equal(firstBad(unaccounted).check, 'archive');
    assert.equal(firstBad(unaccounted).seq, 1);
    assert.match(
      firstBad(unaccounted).reason,
      /no audit\.archive_deleted event after the 24-month cold window accounts for it/,
    );
    // Recorded as deleted, but only a year after its newest event: still removed early.
    const tooSoon = nextEvent(
      tenant,
      { ...early },
      {
        action: 'audit.archive_deleted',
        data: { first_seq: m.first_seq, last_seq: m.last_seq, segment_sha256: m.sha256 },
        ts: '2027-01-01T00:00:00.000Z',
      },
    );
    Object.assign(state, { seq: tooSoon.seq, hash: tooSoon.hash });
    assert.equal(bundle([tooSoon]).ok, false);
  });

  test('AUD-5: a member name given twice in a header, checkpoint or segment line is refused, escaped or not (parsers disagree on which counts)', () => {
    const { events, log } = standard();
    const header = headerLine(tenant, key);
    const checkpoint = checkpointLine(log, key);
    const twiceTenant = header.replace('{', `{"tenant":"${randomUUID()}",`);
    assert.match(firstBad(verify([twiceTenant, checkpoint])).reason, /^line 1 repeats the member "tenant"/);
    const twiceNote = checkpoint.replace('{', '{"\\u006eote":null,');
    assert.match(
      firstBad(verify([header, twiceNote, ...events.map((e) => e.line)])).reason,
      /^line 2 repeats the member "note"/,
    );
    assert.equal(repeatedMember('{"a":{"a":1},"b":[{"a":1},{"a":2}],"c":"\\"a\\":"}'), undefined);
    assert.equal(repeatedMember('[{"x":1,"y":{"z":1,"z":2}}]'), 'z');
  });

  test('AUD-5: every byte of an event line changed in turn, multi-byte characters included, fails the same read as bytes as read as text: same first bad seq, check and reason', () => {
    const state = genesis();
    const events = [
      ...chain(3, state),
      nextEvent(tenant, state, { data: { name: 'ci «deploy» ✓ 😀', note: 'café' } }),
      ...chain(2, state),
    ];
    const log = syntheticLog({ tenant, heads: [{ ...state }], key });
    const lines = [headerLine(tenant, key), checkpointLine(log, key), ...events.map((e) => e.line)];
    const bytes = Buffer.from(lines.map((line) => `${line}\n`).join(''));
    const target = events[3] as SyntheticEvent;
    const start = bytes.indexOf(target.line);
    const end = start + Buffer.byteLength(target.line);
    assert.ok(start > 0 && end - start > target.line.length, 'the line has multi-byte characters');
    let changes = 0;
    for (let at = start; at < end; at++) {
      // Another ASCII byte, a byte that is never UTF-8, and a continuation byte (another character, or none).
      for (const value of [(bytes[at] as number) ^ 0x01, 0xff, (bytes[at] as number) ^ 0x10]) {
        const tampered = Buffer.from(bytes);
        tampered[at] = value;
        const asText = new BundleVerifier();
        for (const line of tampered.toString('utf8').split('\n').slice(0, -1)) if (!asText.push(line)) break;
        const expected = asText.finish();
        assert.equal(expected.ok, false, `byte ${at - start} set to ${value}`);
        assert.deepEqual(verifyBytes(tampered), expected, `byte ${at - start} set to ${value}`);
        changes++;
      }
    }
    assert.equal(changes, 3 * (end - start));
  });

  test('AUD-5: lines that are not a bundle are reported, not thrown', () => {
    assert.match(firstBad(verify(['not json'])).reason, /not an Enclave audit bundle/);
    assert.match(firstBad(verify([])).reason, /ends before the header/);
    const events = chain(2);
    const { log } = standard();
    const garbled = verify([
      headerLine(tenant, key),
      checkpointLine(log, key),
      events[0]?.line ?? '',
      '{"hash":"zz"}',
    ]);
    assert.equal(firstBad(garbled).seq, 2);
  });
});
