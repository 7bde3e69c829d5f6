import { isUtf8 } from 'node:buffer';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseCheckpointLine } from './bundle-format.ts';
import { BundleVerifier, type BundleVerifyOptions, type VerifyReport } from './bundle-verify.ts';

// `enclave-verify FILE`: the recovery kit's verifier (AUD-5). It needs no
// server, no database and no configuration, and imports nothing from outside
// src/audit but node: builtins and `canonicalize` (a test walks the import
// graph). Exit status: 0 every check held, 1 a check failed, 2 bad usage or
// an unreadable file.

export const VERIFY_USAGE = `Usage: enclave-verify [options] FILE

Verifies an Enclave audit bundle offline: every event's canonical bytes and
hash link, the archive segments, the checkpoint's signature, the inclusion of
the tenant's chain head in it, and that no event the checkpoint covers is
missing from the end.

Options:
  --key KEY                      Trust this verifier key (as published at
                                 /.well-known/enclave-checkpoint-key) instead
                                 of the one inside the bundle.
  --previous-checkpoint FILE     A checkpoint note (or an earlier bundle) saved
                                 before: the bundle's checkpoint must extend it.
  -h, --help                     Show this help.`;

export interface VerifyIo {
  out(line: string): void;
  err(line: string): void;
  /** Progress output (a TTY), or undefined for none. */
  readonly progress: { write(text: string): void } | undefined;
}

const READ_CHUNK = 1024 * 1024;

/** Verifies a bundle file; see feedLines. */
export async function verifyBundleFile(
  file: string,
  options: BundleVerifyOptions = {},
  onProgress?: (bytes: number, lines: number) => void,
): Promise<VerifyReport> {
  const verifier = new BundleVerifier(options);
  const stream = createReadStream(file, { highWaterMark: READ_CHUNK });
  try {
    const { unterminated } = await feedLines(
      stream,
      (bytes, start, end, utf8) => verifier.pushBytes(bytes, start, end, utf8),
      onProgress,
    );
    if (unterminated) verifier.unterminated();
  } finally {
    stream.destroy();
  }
  return verifier.finish();
}

/**
 * Splits a byte stream into lines for `push`, each as bytes[start, end)
 * without its "\n": a range of the chunk read, so nothing is decoded or
 * copied but a line that straddles two chunks. `utf8`: the line is valid
 * UTF-8, checked once for all the whole lines of a chunk. Stops reading as
 * soon as `push` returns false. `unterminated`: the last line read had no
 * newline.
 */
export async function feedLines(
  chunks: AsyncIterable<Buffer>,
  push: (bytes: Buffer, start: number, end: number, utf8: boolean) => boolean,
  onProgress?: (bytes: number, lines: number) => void,
): Promise<{ unterminated: boolean }> {
  /** The bytes of an unfinished line from the previous chunk(s). */
  let carry: Buffer | undefined;
  let bytes = 0;
  let lines = 0;
  let reading = true;
  /** Pushes the whole lines of bytes[start, end), which ends in "\n". */
  const pushLines = (chunk: Buffer, start: number, end: number) => {
    // A "\n" byte is never part of a multi-byte character, so the lines of valid UTF-8 are valid too.
    const utf8 = isUtf8(chunk.subarray(start, end));
    for (let from = start; reading && from < end; lines++) {
      const newline = chunk.indexOf(0x0a, from);
      reading = push(chunk, from, newline, utf8);
      from = newline + 1;
    }
  };
  for await (const chunk of chunks) {
    bytes += chunk.length;
    let start = 0;
    if (carry !== undefined) {
      const end = chunk.indexOf(0x0a);
      if (end < 0) {
        carry = Buffer.concat([carry, chunk]);
        continue;
      }
      const line = Buffer.concat([carry, chunk.subarray(0, end + 1)]);
      pushLines(line, 0, line.length);
      carry = undefined;
      start = end + 1;
    }
    const last = chunk.lastIndexOf(0x0a);
    if (reading && last >= start) pushLines(chunk, start, last + 1);
    const rest = Math.max(last + 1, start);
    if (rest < chunk.length) carry = Buffer.from(chunk.subarray(rest));
    onProgress?.(bytes, lines);
    if (!reading) return { unterminated: false };
  }
  if (!reading || carry === undefined) return { unterminated: false };
  lines++;
  push(carry, 0, carry.length, isUtf8(carry));
  return { unterminated: true };
}

/**
 * What --previous-checkpoint gives: a checkpoint note from a note file, or
 * from an earlier bundle its checkpoint note and the tenant's leaves.
 */
export function previousCheckpoint(
  text: string,
): Pick<BundleVerifyOptions, 'previousCheckpoint' | 'previousLeaves'> | undefined {
  if (!text.startsWith('{')) return { previousCheckpoint: text };
  const [first, second] = text.split('\n', 3);
  let header: unknown;
  let value: unknown;
  try {
    header = JSON.parse(first ?? '');
    value = JSON.parse(second ?? '');
  } catch {
    return undefined;
  }
  const line = parseCheckpointLine(value);
  const tenant =
    typeof header === 'object' && header !== null && 'tenant' in header ? header.tenant : undefined;
  if (!line.ok || line.value.note === null || typeof tenant !== 'string') return undefined;
  return {
    previousCheckpoint: line.value.note,
    previousLeaves: {
      tenant,
      leaves: line.value.leaves.map(({ index, seq, hash }) => ({ index, seq, hash })),
    },
  };
}

export function formatReport(file: string, report: VerifyReport): string[] {
  const n = (value: number | bigint) => value.toLocaleString('en-US');
  const out = [`enclave-verify: ${file}`];
  if (report.tenant !== undefined) out.push(`  tenant      ${report.tenant}`);
  const head = report.head === undefined ? 'no events' : `head seq ${n(report.head.seq)}`;
  const manifestOnly =
    report.eventsByManifestOnly > 0
      ? `, ${n(report.eventsByManifestOnly)} known by archive manifest only`
      : '';
  out.push(`  events      ${n(report.eventsVerified)} verified (${head})${manifestOnly}`);
  const { total, included, recorded } = report.segments;
  if (total > 0) {
    out.push(
      `  archive     ${total} segments, ${included} included, ${recorded} recorded by audit.archived events`,
    );
  }
  if (report.checkpoint !== undefined) {
    const { size, keyName, keyId, pinned } = report.checkpoint;
    out.push(
      `  checkpoint  size ${n(size)}, signed by ${keyName} (key ID ${keyId}, ${pinned ? 'pinned' : 'from the bundle'})`,
    );
  }
  if (report.committed !== undefined) {
    out.push(
      `  leaves      ${n(report.leaves)} of this tenant proven in the checkpoint; the newest commits to seq ${n(report.committed.seq)} (leaf ${report.committed.index})`,
    );
  }
  if (report.previousSize !== undefined)
    out.push(`  previous    checkpoint of size ${n(report.previousSize)}`);
  for (const note of report.notes) out.push(`  note: ${note}`);
  if (report.ok) {
    out.push('OK: every check holds.');
    return out;
  }
  const first = report.problems.find((problem) => problem.seq !== undefined);
  out.push(
    first === undefined
      ? `FAILED: ${report.problems[0]?.reason ?? 'unknown'}`
      : `FAILED: first bad seq ${first.seq} (${first.check}): ${first.reason}`,
  );
  for (const problem of report.problems) out.push(`  [${problem.check}] ${problem.reason}`);
  return out;
}

function progressBar(io: VerifyIo, total: number): ((bytes: number, lines: number) => void) | undefined {
  const progress = io.progress;
  if (progress === undefined || total === 0) return undefined;
  let shown = -1;
  return (bytes, lines) => {
    const percent = Math.floor((bytes / total) * 100);
    if (percent === shown) return;
    shown = percent;
    const filled = Math.round(percent / 4);
    progress.write(
      `\r[${'#'.repeat(filled)}${'.'.repeat(25 - filled)}] ${percent}% ${lines.toLocaleString('en-US')} lines`,
    );
  };
}

export async function runVerify(argv: readonly string[], io: VerifyIo): Promise<number> {
  let parsed: ReturnType<typeof parseVerifyArgs>;
  try {
    parsed = parseVerifyArgs(argv);
  } catch (error) {
    io.err(`enclave-verify: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
    io.err('Run "enclave-verify --help".');
    return 2;
  }
  if (parsed.help) {
    io.out(VERIFY_USAGE);
    return 0;
  }
  const options: { -readonly [K in keyof BundleVerifyOptions]: BundleVerifyOptions[K] } = {};
  if (parsed.key !== undefined) options.pinnedKey = parsed.key.trim();
  let size: number;
  try {
    size = (await stat(parsed.file)).size;
    if (parsed.previous !== undefined) {
      const previous = previousCheckpoint(await readFile(parsed.previous, 'utf8'));
      if (previous === undefined) throw new Error(`${parsed.previous} holds no checkpoint note`);
      Object.assign(options, previous);
    }
  } catch (error) {
    io.err(`enclave-verify: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  const onProgress = progressBar(io, size);
  let report: VerifyReport;
  try {
    report = await verifyBundleFile(parsed.file, options, onProgress);
  } catch (error) {
    io.err(
      `enclave-verify: cannot read ${parsed.file}: ${error instanceof Error ? error.message : String(error)}`,
    );
    return 2;
  } finally {
    if (onProgress !== undefined) io.progress?.write('\r\x1b[K');
  }
  for (const line of formatReport(parsed.file, report)) io.out(line);
  return report.ok ? 0 : 1;
}

function parseVerifyArgs(argv: readonly string[]): {
  help: boolean;
  file: string;
  key: string | undefined;
  previous: string | undefined;
} {
  const { values, positionals } = parseArgs({
    args: [...argv],
    options: {
      key: { type: 'string' },
      'previous-checkpoint': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  const help = values.help === true;
  if (!help && positionals.length !== 1) throw new Error('give exactly one bundle FILE');
  return { help, file: positionals[0] ?? '', key: values.key, previous: values['previous-checkpoint'] };
}
