import { type BundleCheckpoint, type BundleHeader, decodeProof, hashFromHex } from './bundle-format.ts';
import { headLeafHash, headMapEntryHash, parseHeadMapExtension } from './leaf.ts';
import { verifyConsistency, verifyInclusion } from './merkle.ts';
import { type Checkpoint, parseVerifierKey, verifyCheckpoint } from './note.ts';

// The checkpoint line of a bundle, checked on its own (AUD-4, AUD-8): the
// note's signature against the trusted key, the inclusion of every leaf of
// the tenant, and the consistency with an earlier checkpoint. What it finds
// — the commitments the chain must then match — goes to BundleVerifier.

export interface BundleVerifyOptions {
  /** A verifier key string to trust instead of the one the bundle carries (the operator's published key). */
  readonly pinnedKey?: string;
  /** A checkpoint note saved earlier; the bundle's checkpoint must extend it (AUD-8). */
  readonly previousCheckpoint?: string;
  /**
   * The leaves of an earlier bundle of the same tenant (when --previous-checkpoint
   * names a bundle): the log is append-only, so each must appear again (AUD-8).
   */
  readonly previousLeaves?: { readonly tenant: string; readonly leaves: readonly PreviousLeaf[] };
}

/** A leaf as an earlier bundle listed it. */
export interface PreviousLeaf {
  readonly index: string;
  readonly seq: number;
  readonly hash: string;
}

export type CheckName =
  | 'bundle'
  | 'chain'
  | 'checkpoint'
  | 'inclusion'
  | 'completeness'
  | 'consistency'
  | 'archive';

export interface Problem {
  readonly check: CheckName;
  /** The first seq this problem is about, when it is about one. */
  readonly seq?: number;
  readonly reason: string;
}

/** A proven leaf: the log committed that this tenant's event had `hash`. */
export interface Commitment {
  readonly index: string;
  readonly hash: string;
}

export interface CheckpointFindings {
  /** The verified checkpoint, or undefined if there is none or it does not verify. */
  readonly checkpoint: Checkpoint | undefined;
  readonly signedBy:
    | { readonly size: bigint; readonly keyName: string; readonly keyId: string; readonly pinned: boolean }
    | undefined;
  /** Every proven leaf by seq: the chain must pass through each. */
  readonly committedBySeq: ReadonlyMap<number, Commitment>;
  /** The proven leaf with the highest seq: the chain must reach it. */
  readonly committed: (Commitment & { readonly seq: number }) | undefined;
  readonly previousSize: bigint | undefined;
  readonly problems: readonly Problem[];
  readonly notes: readonly string[];
}

export function checkBundleCheckpoint(
  header: BundleHeader,
  line: BundleCheckpoint,
  options: BundleVerifyOptions,
): CheckpointFindings {
  const problems: Problem[] = [];
  const notes: string[] = [];
  const committedBySeq = new Map<number, Commitment>();
  const none = { checkpoint: undefined, signedBy: undefined, committedBySeq, committed: undefined };
  if (line.note === null) {
    problems.push({
      check: 'checkpoint',
      reason: 'the bundle has no checkpoint: nothing proves the newest events were not deleted (AUD-8)',
    });
    return { ...none, previousSize: undefined, problems, notes };
  }
  const key = options.pinnedKey ?? header.checkpoint_key;
  if (key === null) {
    problems.push({ check: 'checkpoint', reason: 'no verifier key: the bundle has none, pass --key' });
    return { ...none, previousSize: undefined, problems, notes };
  }
  if (options.pinnedKey !== undefined && header.checkpoint_key !== options.pinnedKey) {
    notes.push('the bundle names another checkpoint key than the pinned one; the pinned key was used');
  }
  let checkpoint: Checkpoint;
  let signedBy: CheckpointFindings['signedBy'];
  try {
    const parsedKey = parseVerifierKey(key);
    // The key is named for the log it signs: its name is the origin (docs/audit-format.md §2).
    if (parsedKey.name !== header.origin) {
      throw new Error(`the verifier key is named ${parsedKey.name}, not this log's origin ${header.origin}`);
    }
    // Attacker-controlled: the note (a replaced checkpoint file). Invariant: only a note the
    // trusted key signed, for this log's origin, is used from here on.
    checkpoint = verifyCheckpoint(line.note, parsedKey, header.origin);
    signedBy = {
      size: checkpoint.size,
      keyName: parsedKey.name,
      keyId: parsedKey.keyId.toString('hex'),
      pinned: options.pinnedKey !== undefined,
    };
  } catch (error) {
    problems.push({ check: 'checkpoint', reason: `the checkpoint does not verify: ${message(error)}` });
    return { ...none, previousSize: undefined, problems, notes };
  }
  const committed = checkLeaves(header.tenant, line, checkpoint, committedBySeq, problems);
  checkHeadMap(header.tenant, line, checkpoint, problems, notes);
  const previousSize = checkPrevious(header.origin, line, checkpoint, key, options, problems);
  checkPreviousLeaves(header.tenant, line, checkpoint, options, problems);
  return { checkpoint, signedBy, committedBySeq, committed, previousSize, problems, notes };
}

function checkLeaves(
  tenant: string,
  line: BundleCheckpoint,
  checkpoint: Checkpoint,
  committedBySeq: Map<number, Commitment>,
  problems: Problem[],
): CheckpointFindings['committed'] {
  if (line.leaves.length === 0) {
    problems.push({
      check: 'inclusion',
      reason: `the checkpoint of size ${checkpoint.size} has no leaf for this tenant yet`,
    });
    return undefined;
  }
  let committed: CheckpointFindings['committed'];
  let before: { index: bigint; seq: number } | undefined;
  for (const leaf of line.leaves) {
    // The tenant's leaves, in log order, commit to ever later heads: a seq below an earlier
    // leaf's is a head that went back at a checkpoint (events hidden or deleted, perhaps
    // restored afterwards), and leaves out of index order are not the log's listing. (One
    // seq with two hashes is a rewrite, reported below.)
    const index = BigInt(leaf.index);
    if (before !== undefined && (index <= before.index || leaf.seq < before.seq)) {
      problems.push({
        check: 'checkpoint',
        seq: leaf.seq,
        reason:
          index <= before.index
            ? `leaf ${leaf.index} is listed after leaf ${before.index}: the leaves are not in log order`
            : `leaf ${leaf.index} commits to seq ${leaf.seq}, below seq ${before.seq} of the leaf before it: the head went back between two checkpoints (events were hidden or deleted)`,
      });
    }
    before = { index, seq: leaf.seq };
    // Attacker-controlled: each leaf and proof. Invariant: only a leaf proven to be in the
    // signed tree becomes a commitment the chain must match.
    try {
      const leafHash = headLeafHash({ tenant, seq: leaf.seq, hash: hashFromHex(leaf.hash) });
      const proof = decodeProof(leaf.inclusion_proof) ?? [];
      verifyInclusion(BigInt(leaf.index), checkpoint.size, leafHash, proof, checkpoint.root);
    } catch (error) {
      problems.push({
        check: 'inclusion',
        seq: leaf.seq,
        reason: `leaf ${leaf.index} (seq ${leaf.seq}) is not in the checkpoint: ${message(error)}`,
      });
      continue;
    }
    const earlier = committedBySeq.get(leaf.seq);
    if (earlier !== undefined && earlier.hash !== leaf.hash) {
      // The log itself shows the rewrite: two commitments to one seq.
      problems.push({
        check: 'checkpoint',
        seq: leaf.seq,
        reason: `seq ${leaf.seq}: the log committed to two different hashes for it (leaves ${earlier.index} and ${leaf.index}): the chain was rewritten after a checkpoint`,
      });
    }
    committedBySeq.set(leaf.seq, { index: leaf.index, hash: leaf.hash });
    if (committed === undefined || leaf.seq >= committed.seq) {
      committed = { index: leaf.index, seq: leaf.seq, hash: leaf.hash };
    }
  }
  return committed;
}

/**
 * The signed head map (AUD-8) must have the tenant's newest listed leaf as its
 * head: a bundle that leaves out the tenant's newer leaves (re-tagged to
 * another tenant, say) or follows a head rolled back fails here, even with no
 * earlier checkpoint to compare with.
 */
function checkHeadMap(
  tenant: string,
  line: BundleCheckpoint,
  checkpoint: Checkpoint,
  problems: Problem[],
  notes: string[],
): void {
  let map: ReturnType<typeof parseHeadMapExtension>;
  try {
    map = parseHeadMapExtension(checkpoint.extensions);
  } catch (error) {
    problems.push({ check: 'checkpoint', reason: message(error) });
    return;
  }
  if (map === undefined) {
    notes.push(
      'the checkpoint predates head maps: that the bundle lists every leaf of this tenant is not proven',
    );
    return;
  }
  const newest = line.leaves.at(-1);
  if (newest === undefined) return; // no leaf of this tenant yet: reported by the inclusion check
  const entry = line.head_map;
  try {
    if (entry === undefined) throw new Error('the bundle has no head map entry for this tenant');
    if (BigInt(entry.size) !== map.size)
      throw new Error(`the entry is for a head map of ${entry.size}, not ${map.size}`);
    const hash = headMapEntryHash({ tenant, seq: newest.seq, hash: hashFromHex(newest.hash) });
    verifyInclusion(BigInt(entry.index), map.size, hash, decodeProof(entry.proof) ?? [], map.root);
  } catch (error) {
    problems.push({
      check: 'checkpoint',
      seq: newest.seq,
      reason: `the checkpoint's signed head map does not have seq ${newest.seq} (the newest leaf the bundle lists) as this tenant's head: the tenant's newer leaves were hidden or its head rolled back (${message(error)})`,
    });
  }
}

/** Every leaf of an earlier bundle that the bundle's checkpoint covers must be listed again, unchanged. */
function checkPreviousLeaves(
  tenant: string,
  line: BundleCheckpoint,
  checkpoint: Checkpoint,
  options: BundleVerifyOptions,
  problems: Problem[],
): void {
  const previous = options.previousLeaves;
  if (previous === undefined) return;
  if (previous.tenant !== tenant) {
    problems.push({
      check: 'consistency',
      reason: `the earlier bundle is of another tenant (${previous.tenant})`,
    });
    return;
  }
  const listed = new Map(line.leaves.map((leaf) => [leaf.index, leaf]));
  for (const leaf of previous.leaves) {
    if (BigInt(leaf.index) >= checkpoint.size) continue;
    const again = listed.get(leaf.index);
    if (again === undefined || again.seq !== leaf.seq || again.hash !== leaf.hash) {
      problems.push({
        check: 'consistency',
        seq: leaf.seq,
        reason: `leaf ${leaf.index} (seq ${leaf.seq}) of the earlier bundle is ${again === undefined ? 'missing from' : 'different in'} this one: the log's leaves of this tenant were hidden or altered`,
      });
      return;
    }
  }
}

function checkPrevious(
  origin: string,
  line: BundleCheckpoint,
  checkpoint: Checkpoint,
  key: string,
  options: BundleVerifyOptions,
  problems: Problem[],
): bigint | undefined {
  const note = options.previousCheckpoint;
  if (note === undefined) return undefined;
  let previous: Checkpoint;
  try {
    previous = verifyCheckpoint(note, key, origin);
  } catch (error) {
    problems.push({
      check: 'consistency',
      reason: `the previous checkpoint does not verify: ${message(error)}`,
    });
    return undefined;
  }
  const [oldSize, newSize] = [previous.size, checkpoint.size];
  if (oldSize > newSize) {
    problems.push({
      check: 'consistency',
      reason: `the bundle's checkpoint (size ${newSize}) is older than the previous one (size ${oldSize}): the log was rolled back`,
    });
    return oldSize;
  }
  if (oldSize === 0n) return oldSize; // the empty tree is a prefix of every tree
  const entry = line.consistency.find((c) => c.old_size === oldSize.toString());
  if (entry === undefined && oldSize !== newSize) {
    problems.push({
      check: 'consistency',
      reason: `the bundle has no consistency proof from size ${oldSize}; export it again with --consistency-from ${oldSize}`,
    });
    return oldSize;
  }
  try {
    verifyConsistency(
      oldSize,
      newSize,
      previous.root,
      checkpoint.root,
      decodeProof(entry?.proof ?? []) ?? [],
    );
  } catch (error) {
    problems.push({
      check: 'consistency',
      reason: `the checkpoint of size ${newSize} does not extend the previous one of size ${oldSize} (the log was rewritten): ${message(error)}`,
    });
  }
  return oldSize;
}

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
