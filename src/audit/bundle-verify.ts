import { createHash, type Hash } from 'node:crypto';
import {
  type BundleVerifyOptions,
  type CheckName,
  type CheckpointFindings,
  type Commitment,
  checkBundleCheckpoint,
  type Problem,
} from './bundle-checkpoint.ts';
import {
  type BundleHeader,
  eventLineAt,
  hashFromHex,
  isEventLine,
  parseCheckpointLine,
  parseEventLine,
  parseHeader,
  parseSegmentLine,
  type SegmentManifest,
} from './bundle-format.ts';
import { ChainVerifier } from './chain.ts';
import type { AuditEvent } from './event.ts';
import type { Checkpoint } from './note.ts';

// The offline verifier's core (AUD-5, AUD-7, AUD-8): fed a bundle one line at
// a time, it keeps only the chain head, so a bundle of any size verifies in
// constant memory. In order: the checkpoint note's signature (against the
// pinned key if one is given), the inclusion of the tenant's leaf, the
// consistency with an earlier checkpoint; then every archive segment and
// event as one chain — links, canonical bytes, seq continuity, segment
// digests — and finally that the chain reaches the head the checkpoint
// committed to. No I/O: verify-cli.ts reads the file, and hands each line
// over as bytes (pushBytes): an event line's canonical text is then hashed
// straight from them, and the line decoded only if it does not verify, to
// be checked again as text (push), which finds the reason.

export type { BundleVerifyOptions, CheckName, Problem } from './bundle-checkpoint.ts';

export interface VerifyReport {
  /** Every check held: the only case the CLI exits 0. */
  readonly ok: boolean;
  readonly tenant: string | undefined;
  readonly origin: string | undefined;
  readonly lines: number;
  /** Events whose canonical bytes and hash were checked. */
  readonly eventsVerified: number;
  /** Events of archive segments not in the bundle (deleted past the cold window): known by manifest only. */
  readonly eventsByManifestOnly: number;
  readonly head: { readonly seq: number; readonly hash: string } | undefined;
  readonly segments: { readonly total: number; readonly included: number; readonly recorded: number };
  readonly checkpoint:
    | { readonly size: bigint; readonly keyName: string; readonly keyId: string; readonly pinned: boolean }
    | undefined;
  /** The tenant's leaf with the highest seq, which the chain must reach. */
  readonly committed: { readonly index: string; readonly seq: number; readonly hash: string } | undefined;
  /** How many of the tenant's leaves were proven included and matched against the chain. */
  readonly leaves: number;
  readonly previousSize: bigint | undefined;
  readonly problems: readonly Problem[];
  readonly notes: readonly string[];
}

interface OpenSegment {
  readonly manifest: SegmentManifest;
  remaining: number;
  readonly digest: Hash;
}

/** Archive segments are deleted no sooner than this many months after their newest event (AUD-7; ENCLAVE_AUDIT_COLD_MONTHS' minimum). */
const COLD_MONTHS_FLOOR = 24;

export class BundleVerifier {
  readonly #options: BundleVerifyOptions;
  #stage: 'header' | 'checkpoint' | 'body' = 'header';
  #header: BundleHeader | undefined;
  #checkpoint: Checkpoint | undefined;
  #report: CheckpointFindings['signedBy'];
  /** The leaf with the highest seq: the chain must reach it (AUD-8). */
  #committed: (Commitment & { readonly seq: number }) | undefined;
  /** Every proven leaf by seq: the chain must pass through each. */
  #committedBySeq: ReadonlyMap<number, Commitment> = new Map();
  #uncheckable = 0;
  #previousSize: bigint | undefined;
  /** From the header on: the chain so far, whose head is the prev_hash the next event must carry. */
  #chain: ChainVerifier | undefined;
  #nextSeq = 1;
  #lines = 0;
  #verified = 0;
  #byManifest = 0;
  #segment: OpenSegment | undefined;
  #hotStarted = false;
  readonly #manifests = new Map<number, SegmentManifest>();
  /** Segments the bundle does not include, by first seq: each must be accounted for by an audit.archive_deleted event (AUD-7). */
  readonly #withheld = new Map<number, { manifest: SegmentManifest; accounted: boolean }>();
  #segmentCount = 0;
  #includedCount = 0;
  #recorded = 0;
  #chainBroken = false;
  readonly #problems: Problem[] = [];
  readonly #notes: string[] = [];

  constructor(options: BundleVerifyOptions = {}) {
    this.#options = options;
  }

  /**
   * Checks the next line given as bytes, bytes[start, end) without its "\n";
   * `utf8`: the caller found them valid UTF-8 (feedLines checks a whole read
   * at once). An event line is checked on its bytes; any other line, or one
   * that is not valid UTF-8 or does not verify that way, is decoded (with
   * U+FFFD for bad bytes) and checked by push. Returns as push does.
   */
  pushBytes(bytes: Buffer, start: number, end: number, utf8: boolean): boolean {
    const record =
      utf8 && this.#stage === 'body' && !this.#chainBroken ? eventLineAt(bytes, start, end) : undefined;
    const event = record === undefined ? undefined : (this.#chain as ChainVerifier).pushUtf8(record);
    if (event === undefined) return this.push(bytes.toString('utf8', start, end));
    this.#lines++;
    // An archive segment's digest takes the line's bytes; outside one, no view of them is made.
    return this.#onVerifiedEvent(event, this.#segment === undefined ? '' : bytes.subarray(start, end));
  }

  /** Checks the next line (without its "\n"); false once the chain is broken and reading on is pointless. */
  push(line: string): boolean {
    this.#lines++;
    if (this.#chainBroken) return false;
    switch (this.#stage) {
      case 'header':
        return this.#onHeader(line);
      case 'checkpoint':
        return this.#onCheckpoint(line);
      default:
        return isEventLine(line) ? this.#onEvent(line) : this.#onSegment(line);
    }
  }

  /** The file's last line had no newline: every line of a bundle ends in one, so it may have been cut short. */
  unterminated(): void {
    this.#problem({
      check: 'bundle',
      reason: `line ${this.#lines} does not end in a newline, as every line of a bundle does: the file may have been cut short`,
    });
  }

  finish(): VerifyReport {
    if (this.#stage !== 'body') {
      if (!this.#chainBroken) {
        this.#problem({ check: 'bundle', reason: 'the file ends before the header and checkpoint lines' });
      }
    } else if (!this.#chainBroken) {
      this.#finishChain();
    }
    const problems = [...this.#problems].sort((a, b) => (a.seq ?? Infinity) - (b.seq ?? Infinity));
    return {
      ok: problems.length === 0,
      tenant: this.#header?.tenant,
      origin: this.#header?.origin,
      lines: this.#lines,
      eventsVerified: this.#verified,
      eventsByManifestOnly: this.#byManifest,
      head:
        this.#chain !== undefined && this.#nextSeq > 1
          ? { seq: this.#nextSeq - 1, hash: this.#headHex() }
          : undefined,
      segments: { total: this.#segmentCount, included: this.#includedCount, recorded: this.#recorded },
      checkpoint: this.#report,
      committed: this.#committed,
      leaves: this.#committedBySeq.size,
      previousSize: this.#previousSize,
      problems,
      notes: [...this.#notes],
    };
  }

  #onHeader(line: string): boolean {
    const value = parseJson(line);
    if (value instanceof RepeatedMember) return this.#fatal('bundle', `line 1 ${value.message}`);
    const header = parseHeader(value);
    if (!header.ok) return this.#fatal('bundle', `not an Enclave audit bundle: ${header.reason}`);
    this.#header = header.value;
    this.#chain = new ChainVerifier({ tenant: header.value.tenant });
    this.#stage = 'checkpoint';
    return true;
  }

  #onCheckpoint(line: string): boolean {
    const value = parseJson(line);
    if (value instanceof RepeatedMember) return this.#fatal('bundle', `line 2 ${value.message}`);
    const parsed = parseCheckpointLine(value);
    if (!parsed.ok) return this.#fatal('bundle', `line 2: ${parsed.reason}`);
    this.#stage = 'body';
    const findings = checkBundleCheckpoint(this.#header as BundleHeader, parsed.value, this.#options);
    this.#problems.push(...findings.problems);
    this.#notes.push(...findings.notes);
    this.#checkpoint = findings.checkpoint;
    this.#report = findings.signedBy;
    this.#committed = findings.committed;
    this.#committedBySeq = findings.committedBySeq;
    this.#previousSize = findings.previousSize;
    return true;
  }

  #onSegment(line: string): boolean {
    if (this.#segment !== undefined || this.#hotStarted) {
      return this.#fatal('bundle', `line ${this.#lines}: expected an event line`, this.#nextSeq);
    }
    const value = parseJson(line);
    if (value instanceof RepeatedMember) {
      return this.#fatal('bundle', `line ${this.#lines} ${value.message}`, this.#nextSeq);
    }
    const parsed = parseSegmentLine(value);
    if (!parsed.ok) return this.#fatal('bundle', `line ${this.#lines}: ${parsed.reason}`, this.#nextSeq);
    const { manifest, included } = parsed.value;
    const where = `archive segment ${manifest.first_seq}–${manifest.last_seq}`;
    // Attacker-controlled: the manifest. Invariant: segments tile the chain from seq 1, each
    // starting where the previous link ended.
    if (manifest.tenant !== this.#header?.tenant) {
      return this.#fatal('archive', `${where} belongs to tenant ${manifest.tenant}`, manifest.first_seq);
    }
    if (manifest.first_seq !== this.#nextSeq) {
      return this.#fatal('archive', `${where} should start at seq ${this.#nextSeq}`, this.#nextSeq);
    }
    if (manifest.first_prev_hash !== this.#headHex()) {
      return this.#fatal(
        'archive',
        `${where} does not chain from the hash of seq ${this.#nextSeq - 1}`,
        this.#nextSeq,
      );
    }
    this.#segmentCount++;
    this.#manifests.set(manifest.first_seq, manifest);
    if (included) {
      this.#includedCount++;
      this.#segment = { manifest, remaining: manifest.event_count, digest: createHash('sha256') };
      return true;
    }
    // Not in the bundle: the chain resumes after it. That is sound only for a segment deleted
    // past the cold window, which an audit.archive_deleted event later in the chain records;
    // anything else (a file removed early, an included segment marked as not) fails at finish.
    this.#byManifest += manifest.event_count;
    this.#withheld.set(manifest.first_seq, { manifest, accounted: false });
    const committed = this.#committed;
    if (
      committed !== undefined &&
      committed.seq >= manifest.first_seq &&
      committed.seq <= manifest.last_seq
    ) {
      if (committed.seq !== manifest.last_seq || committed.hash !== manifest.last_hash) {
        this.#notes.push(
          `the checkpointed seq ${committed.seq} lies in ${where}, which is not in the bundle`,
        );
      }
    }
    this.#chain = new ChainVerifier({
      tenant: manifest.tenant,
      expectFirstSeq: manifest.last_seq + 1,
      expectPrevHash: hashFromHex(manifest.last_hash),
    });
    this.#nextSeq = manifest.last_seq + 1;
    return true;
  }

  /** An event line as text: the reference path, which says why a line does not verify. */
  #onEvent(line: string): boolean {
    const seq = this.#nextSeq;
    const parsed = parseEventLine(line);
    if (parsed === undefined) {
      return this.#fatal(
        'chain',
        `line ${this.#lines} is not an event line {"hash","prev_hash","event"}`,
        seq,
      );
    }
    const chain = this.#chain as ChainVerifier;
    const prevHex = chain.headHex();
    const event = chain.push({ canonical: parsed.canonical, hash: parsed.hash });
    if (event === undefined) {
      const result = chain.result();
      const reason = result.ok ? 'unknown' : result.reason;
      return this.#fatal('chain', reason, result.ok ? seq : result.seq);
    }
    if (parsed.prevHash !== prevHex) {
      return this.#fatal('chain', `seq ${seq}: its prev_hash field is not the hash of seq ${seq - 1}`, seq);
    }
    return this.#onVerifiedEvent(event, line);
  }

  /**
   * The checks after an event's own (its canonical text, seq and link held), on either path.
   * `line`: the event line, as text or bytes, for the digest of the archive segment it is in.
   */
  #onVerifiedEvent(event: AuditEvent, line: string | Uint8Array): boolean {
    const seq = event.seq;
    this.#hotStarted ||= this.#segment === undefined;
    this.#nextSeq = seq + 1;
    this.#verified++;
    if (this.#segment !== undefined && !this.#segmentLine(line)) return false;
    const committed = this.#committedBySeq.get(seq);
    if (committed !== undefined && committed.hash !== this.#headHex()) {
      return this.#fatal(
        'checkpoint',
        `seq ${seq}: its hash is not the one the checkpoint committed to (leaf ${committed.index}): the chain was rewritten at or before seq ${seq}`,
        seq,
      );
    }
    if (event.action === 'audit.archived') this.#crossCheckArchived(event);
    if (event.action === 'audit.archive_deleted') this.#accountDeletion(event);
    return true;
  }

  /** `line`: the event line's bytes, or its text (hashed as UTF-8). */
  #segmentLine(line: string | Uint8Array): boolean {
    const segment = this.#segment as OpenSegment;
    segment.digest.update(line).update('\n');
    segment.remaining--;
    if (segment.remaining > 0) return true;
    this.#segment = undefined;
    const { manifest } = segment;
    const where = `archive segment ${manifest.first_seq}–${manifest.last_seq}`;
    if (segment.digest.digest('hex') !== manifest.sha256) {
      return this.#fatal(
        'archive',
        `${where}: its bytes do not have the manifest's SHA-256`,
        manifest.first_seq,
      );
    }
    if (this.#headHex() !== manifest.last_hash) {
      return this.#fatal(
        'archive',
        `${where}: its last hash is not the manifest's last_hash`,
        manifest.last_seq,
      );
    }
    return true;
  }

  /** An audit.archived event is the chain's own record of a segment: the manifest must say the same. */
  #crossCheckArchived(event: AuditEvent): void {
    const data = event.data;
    const manifest = typeof data.first_seq === 'number' ? this.#manifests.get(data.first_seq) : undefined;
    const same =
      manifest !== undefined &&
      data.last_seq === manifest.last_seq &&
      data.event_count === manifest.event_count &&
      data.first_prev_hash === manifest.first_prev_hash &&
      data.last_hash === manifest.last_hash &&
      data.segment_sha256 === manifest.sha256;
    if (same) {
      this.#recorded++;
      return;
    }
    this.#problem({
      check: 'archive',
      seq: event.seq,
      reason: `seq ${event.seq} records archive segment ${String(data.first_seq)}–${String(data.last_seq)}, which the bundle ${manifest === undefined ? 'does not list' : 'lists with other hashes'}`,
    });
  }

  /** An audit.archive_deleted event accounts for a withheld segment it names, if it came past the cold window. */
  #accountDeletion(event: AuditEvent): void {
    const data = event.data;
    const withheld = typeof data.first_seq === 'number' ? this.#withheld.get(data.first_seq) : undefined;
    if (
      withheld === undefined ||
      data.last_seq !== withheld.manifest.last_seq ||
      data.segment_sha256 !== withheld.manifest.sha256
    ) {
      return;
    }
    const due = new Date(withheld.manifest.last_ts);
    due.setUTCMonth(due.getUTCMonth() + COLD_MONTHS_FLOOR);
    if (Date.parse(event.ts) >= due.getTime()) withheld.accounted = true;
  }

  /** Every withheld segment must be accounted for (see #accountDeletion), or the chain has a hole no one recorded. */
  #checkWithheld(): void {
    const withheld = [...this.#withheld.values()];
    withheld.forEach(({ manifest, accounted }, i) => {
      if (accounted) return;
      const where = `archive segment ${manifest.first_seq}–${manifest.last_seq}`;
      // Its record may itself lie in a later segment deleted in turn, once that one is accounted for.
      if (withheld.slice(i + 1).some((later) => later.accounted)) {
        this.#notes.push(
          `${where} is not in the bundle; the record of its deletion may be in a later deleted segment`,
        );
        return;
      }
      this.#problem({
        check: 'archive',
        seq: manifest.first_seq,
        reason: `${where} is not in the bundle, and no audit.archive_deleted event after the ${COLD_MONTHS_FLOOR}-month cold window accounts for it: its ${manifest.event_count} events were removed early or withheld`,
      });
    });
  }

  #finishChain(): void {
    this.#checkWithheld();
    if (this.#segment !== undefined) {
      const { manifest, remaining } = this.#segment;
      this.#problem({
        check: 'archive',
        seq: this.#nextSeq,
        reason: `archive segment ${manifest.first_seq}–${manifest.last_seq} ends ${remaining} events early`,
      });
      return;
    }
    if (this.#uncheckable > 0) {
      this.#notes.push(
        `${this.#uncheckable} checkpoint leaves fall inside archive segments that are not in the bundle`,
      );
    }
    const committed = this.#committed;
    const head = this.#nextSeq - 1;
    if (committed === undefined) return;
    if (head < committed.seq) {
      // AUD-8: a chain that verifies but stops short of what was published lost its newest events.
      this.#problem({
        check: 'completeness',
        seq: head + 1,
        reason: `seq ${head + 1}: missing — the checkpoint of size ${this.#checkpoint?.size} commits to seq ${committed.seq} (leaf ${committed.index}), but the chain ends at seq ${head}: the newest events were deleted`,
      });
    } else if (head > committed.seq) {
      this.#notes.push(
        `seq ${committed.seq + 1}–${head} are newer than the checkpoint; the next checkpoint covers them`,
      );
    }
  }

  /** The hash of the last verified link (or the one the chain resumes from), lowercase hex. */
  #headHex(): string {
    return (this.#chain as ChainVerifier).headHex();
  }

  #problem(problem: Problem): void {
    this.#problems.push(problem);
  }

  #fatal(check: CheckName, reason: string, seq?: number): false {
    this.#problem(seq === undefined ? { check, reason } : { check, seq, reason });
    this.#chainBroken = true;
    return false;
  }
}

/** A member name given twice in one object of a line: JSON parsers disagree on which value counts, so it is refused. */
class RepeatedMember {
  readonly message: string;
  constructor(name: string) {
    this.message = `repeats the member ${JSON.stringify(name)} in one object (docs/audit-format.md §3)`;
  }
}

function parseJson(line: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  const repeated = repeatedMember(line);
  return repeated === undefined ? value : new RepeatedMember(repeated);
}

/**
 * The first member name an object of `text` (valid JSON) gives twice, by its
 * decoded value ("a" and "\u0061" are one name); one pass, no value built.
 */
export function repeatedMember(text: string): string | undefined {
  const objects: (Set<string> | null)[] = [];
  let expectName = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let end = i + 1;
      let escaped = false;
      while (text.charCodeAt(end) !== 0x22) {
        if (text.charCodeAt(end) === 0x5c) {
          escaped = true;
          end++;
        }
        end++;
      }
      const names = objects.at(-1);
      if (expectName && names instanceof Set) {
        const name = escaped ? (JSON.parse(text.slice(i, end + 1)) as string) : text.slice(i + 1, end);
        if (names.has(name)) return name;
        names.add(name);
        expectName = false;
      }
      i = end;
    } else if (c === 0x7b) {
      objects.push(new Set());
      expectName = true;
    } else if (c === 0x5b) {
      objects.push(null);
      expectName = false;
    } else if (c === 0x7d || c === 0x5d) {
      objects.pop();
      expectName = false;
    } else if (c === 0x2c) {
      expectName = objects.at(-1) instanceof Set;
    }
  }
  return undefined;
}
