import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { constants } from 'node:os';
import path from 'node:path';
import { AppError } from '../../../errors.ts';

// The seccomp filter every sandbox runs under (AGT-2): denied-syscalls.list
// says what is denied and why, parseDenyList turns it into rules of at most
// one argument comparison each (what libseccomp takes), and build-filter.py,
// run by Debian's python3-seccomp, compiles them into the BPF program that
// bubblewrap loads with --seccomp. Nothing here assembles BPF by hand.

export const DENY_LIST_FILE = path.join(import.meta.dirname, 'denied-syscalls.list');
export const BUILD_SCRIPT = path.join(import.meta.dirname, 'build-filter.py');
/** Debian's interpreter: python3-seccomp installs its module for this one, not for a pyenv or venv python. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** One comparison on one syscall argument, as libseccomp's SCMP_CMP_EQ, _GT and _MASKED_EQ. */
export type ArgTest =
  | { readonly index: number; readonly op: 'eq' | 'gt'; readonly value: number }
  | { readonly index: number; readonly op: 'masked_eq'; readonly mask: number; readonly value: number };

/** Deny `name` with `errno`, always (arg null) or when the argument test matches. */
export interface SeccompRule {
  readonly name: string;
  readonly errno: number;
  readonly arg: ArgTest | null;
}

export interface DenyList {
  readonly rules: readonly SeccompRule[];
  /** Every syscall the list names, once each, in order. */
  readonly names: readonly string[];
}

export type SeccompListErrorCode = 'seccomp_list_invalid';

export class SeccompListError extends AppError<SeccompListErrorCode> {
  constructor(line: number, problem: string) {
    super('seccomp_list_invalid', `denied-syscalls.list line ${line}: ${problem}`);
    this.name = 'SeccompListError';
  }
}

const U32 = 0xffffffff;
const NAME = /^[a-z_][a-z0-9_]*$/;
const ARG = /^arg([0-5])$/;
const NUMBER = /^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})$/;

/** The bits of a 32-bit value, lowest first. */
function bitsOf(value: number): number[] {
  const bits: number[] = [];
  for (let bit = 0; bit < 32; bit++) if (((value >>> bit) & 1) === 1) bits.push(bit);
  return bits;
}

/**
 * "Deny unless the argument is one of `allowed`" in single comparisons,
 * which is all libseccomp takes per rule (rules for one syscall are OR'ed).
 * `allowed` must be every combination of some flags F, optionally plus
 * 0xffffffff (personality's query). Denied: anything above 32 bits; and
 * when 0xffffffff is allowed, every value with a bit b outside F set and
 * some bit clear — covered by a ring over those bits (b set, next one clear)
 * and (first b set, f clear) for each f in F: a value that escapes the ring
 * has every bit outside F set, so it is either 0xffffffff or misses some f.
 * Without 0xffffffff, simply: any bit outside F set.
 */
function unlessIn(index: number, allowed: readonly number[], line: number): ArgTest[] {
  const query = allowed.includes(U32);
  const flagSets = [...new Set(allowed.filter((value) => value !== U32))];
  const flagBits = bitsOf(flagSets.reduce((all, value) => (all | value) >>> 0, 0));
  const combinations = 2 ** flagBits.length;
  const isSubset = (value: number) => bitsOf(value).every((bit) => flagBits.includes(bit));
  if (flagSets.length !== combinations || !flagSets.every(isSubset)) {
    throw new SeccompListError(line, 'the values after "in" must be every combination of some flags');
  }
  const others = bitsOf(U32).filter((bit) => !flagBits.includes(bit));
  const tests: ArgTest[] = [{ index, op: 'gt', value: U32 }];
  if (!query) {
    for (const bit of others) tests.push({ index, op: 'masked_eq', mask: 2 ** bit, value: 2 ** bit });
    return tests;
  }
  if (others.length < 2) throw new SeccompListError(line, 'too many flags to allow with 0xffffffff');
  others.forEach((bit, i) => {
    const next = others[(i + 1) % others.length] as number;
    tests.push({ index, op: 'masked_eq', mask: 2 ** bit + 2 ** next, value: 2 ** bit });
  });
  const first = others[0] as number;
  for (const flag of flagBits) {
    tests.push({ index, op: 'masked_eq', mask: 2 ** first + 2 ** flag, value: 2 ** first });
  }
  return tests;
}

function parseNumber(token: string | undefined, line: number): number {
  if (token === undefined || !NUMBER.test(token)) {
    throw new SeccompListError(line, `expected a number, got "${(token ?? '').slice(0, 20)}"`);
  }
  const value = Number(token);
  if (value > U32) throw new SeccompListError(line, `${token} is wider than 32 bits`);
  return value;
}

function parseArgIndex(token: string | undefined, line: number): number {
  const match = ARG.exec(token ?? '');
  if (match === null)
    throw new SeccompListError(line, `expected arg0 … arg5, got "${(token ?? '').slice(0, 20)}"`);
  return Number(match[1]);
}

/** The argument tests of a condition ("if arg0 == N", "if arg0 & MASK", "unless arg0 in A B …"). */
function parseCondition(tokens: readonly string[], line: number): ArgTest[] {
  const [keyword, arg, op, ...values] = tokens;
  const index = parseArgIndex(arg, line);
  if (keyword === 'if' && op === '==' && values.length === 1) {
    return [{ index, op: 'eq', value: parseNumber(values[0], line) }];
  }
  if (keyword === 'if' && op === '&' && values.length === 1) {
    const mask = parseNumber(values[0], line);
    if (mask === 0) throw new SeccompListError(line, 'the mask is 0');
    return bitsOf(mask).map((bit) => ({ index, op: 'masked_eq', mask: 2 ** bit, value: 2 ** bit }));
  }
  if (keyword === 'unless' && op === 'in' && values.length > 0) {
    return unlessIn(
      index,
      values.map((value) => parseNumber(value, line)),
      line,
    );
  }
  throw new SeccompListError(line, 'expected "if argN == V", "if argN & MASK" or "unless argN in V …"');
}

/** Parses denied-syscalls.list (format in its header); throws SeccompListError with the line at fault. */
export function parseDenyList(text: string): DenyList {
  const rules: SeccompRule[] = [];
  const names: string[] = [];
  let inGroup = false;
  text.split('\n').forEach((raw, i) => {
    const line = i + 1;
    const content = (raw.split('#')[0] ?? '').trim();
    if (content === '') return;
    if (content.startsWith('==')) {
      if (content.slice(2).trim() === '') throw new SeccompListError(line, 'a group needs a reason');
      inGroup = true;
      return;
    }
    if (!inGroup) throw new SeccompListError(line, 'a syscall before the first "== why" group');
    let [name, ...tokens] = content.split(/\s+/);
    if (name === undefined || !NAME.test(name)) {
      throw new SeccompListError(line, `"${(name ?? '').slice(0, 40)}" is not a syscall name`);
    }
    let errno = constants.errno.EPERM;
    if (tokens[0]?.startsWith('errno=')) {
      const errnoName = tokens[0].slice('errno='.length);
      const value = (constants.errno as Readonly<Record<string, number>>)[errnoName];
      if (!/^E[A-Z0-9]+$/.test(errnoName) || value === undefined) {
        throw new SeccompListError(line, `unknown errno "${errnoName.slice(0, 20)}"`);
      }
      errno = value;
      tokens = tokens.slice(1);
    }
    if (names.includes(name)) throw new SeccompListError(line, `${name} is listed twice`);
    names.push(name);
    if (tokens.length === 0) rules.push({ name, errno, arg: null });
    else for (const arg of parseCondition(tokens, line)) rules.push({ name, errno, arg });
  });
  if (names.length === 0) throw new SeccompListError(1, 'the list denies nothing');
  return { rules, names };
}

/** The program for bubblewrap, or why this host cannot have one. Reasons name no host path. */
export type SeccompProgram =
  | {
      readonly ok: true;
      readonly bpf: Buffer;
      /** Syscalls denied (the list's names that this host knows). */
      readonly denied: readonly string[];
      /** The list's names this libseccomp or architecture does not have. */
      readonly skipped: readonly string[];
    }
  | { readonly ok: false; readonly reason: string };

/** Linux takes at most 4096 instructions of 8 bytes per filter (BPF_MAXINSNS). */
const MAX_PROGRAM_BYTES = 4096 * 8;
const BUILD_TIMEOUT_MS = 20_000;

export interface SeccompBuildOptions {
  readonly listFile?: string;
  readonly python?: string;
}

function runScript(
  python: string,
  input: string,
): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(python, [BUILD_SCRIPT], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: '/usr/bin:/bin' },
    });
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), BUILD_TIMEOUT_MS);
    child.stdout.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_PROGRAM_BYTES + 8) chunks.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 16 * 1024) stderr += chunk.toString('utf8');
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    child.once('error', () => {
      clearTimeout(timer);
      resolve({ code: null, stdout: Buffer.alloc(0), stderr: '' });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(chunks), stderr });
    });
  });
}

/** The kernel has seccomp filters when /proc/self/status has a Seccomp line (CONFIG_SECCOMP). */
async function kernelHasSeccomp(): Promise<boolean> {
  const status = await readFile('/proc/self/status', 'utf8').catch(() => '');
  return /^Seccomp:/m.test(status);
}

/** Builds the program from the list; `ok: false` with the reason when this host cannot. */
export async function buildSeccompProgram(options: SeccompBuildOptions = {}): Promise<SeccompProgram> {
  const unavailable = (reason: string): SeccompProgram => ({ ok: false, reason });
  if (process.arch === 's390x') return unavailable("clone's flags are its second argument on s390x");
  if (!(await kernelHasSeccomp())) return unavailable('the kernel has no seccomp');
  let list: DenyList;
  try {
    list = parseDenyList(await readFile(options.listFile ?? DENY_LIST_FILE, 'utf8'));
  } catch (error) {
    if (error instanceof SeccompListError) return unavailable(error.message);
    return unavailable('the list of denied syscalls cannot be read');
  }
  const result = await runScript(options.python ?? SYSTEM_PYTHON, JSON.stringify({ rules: list.rules }));
  // The script writes only "note:" and "error:" lines of its own making (no tracebacks, no paths).
  const lines = result.stderr.split('\n');
  const error = lines.find((line) => line.startsWith('error: '))?.slice('error: '.length, 200);
  if (result.code === null) return unavailable("Debian's python3 with python3-seccomp is not installed");
  if (result.code !== 0) {
    return unavailable(`the seccomp filter could not be built: ${error ?? `exit code ${result.code}`}`);
  }
  const bpf = result.stdout;
  if (bpf.length === 0 || bpf.length % 8 !== 0 || bpf.length > MAX_PROGRAM_BYTES) {
    return unavailable(`the seccomp filter is malformed (${bpf.length} bytes)`);
  }
  const skipped = lines
    .map((line) => /^note: ([a-z0-9_]+) skipped/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined && list.names.includes(name));
  return { ok: true, bpf, denied: list.names.filter((name) => !skipped.includes(name)), skipped };
}

let cached: Promise<SeccompProgram> | undefined;

/** buildSeccompProgram once per process: every sandbox gets the same program. */
export function loadSeccompProgram(): Promise<SeccompProgram> {
  cached ??= buildSeccompProgram();
  return cached;
}
