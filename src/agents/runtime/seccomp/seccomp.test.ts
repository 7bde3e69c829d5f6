import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { constants, tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool } from '../../../../test/helpers/system-tools.ts';
import {
  type ArgTest,
  buildSeccompProgram,
  DENY_LIST_FILE,
  parseDenyList,
  SeccompListError,
  type SeccompRule,
  SYSTEM_PYTHON,
} from './seccomp.ts';

// The list of denied syscalls (AGT-2) as the filter will have it: what the
// parser makes of each line, that argument conditions deny exactly what
// they say, and that Debian's libseccomp builds a well-formed program.

const { EPERM, ENOSYS } = constants.errno;
const U64 = 2n ** 64n - 1n;

/** What the kernel does with a rule's comparison, on a 64-bit argument. */
function matches(test: ArgTest, value: bigint): boolean {
  if (test.op === 'masked_eq') return (value & BigInt(test.mask)) === BigInt(test.value);
  return test.op === 'eq' ? value === BigInt(test.value) : value > BigInt(test.value);
}

/** Whether the rules deny `name` with argument 0 = value (rules for one syscall are OR'ed). */
function denied(rules: readonly SeccompRule[], name: string, value: bigint): boolean {
  return rules.some((rule) => rule.name === name && (rule.arg === null || matches(rule.arg, value)));
}

function listError(text: string): SeccompListError {
  try {
    parseDenyList(text);
  } catch (error) {
    assert.ok(error instanceof SeccompListError, String(error));
    assert.equal(error.code, 'seccomp_list_invalid');
    return error;
  }
  assert.fail('parsed');
}

describe('the denied-syscalls list', () => {
  let list: ReturnType<typeof parseDenyList>;
  before(async () => {
    list = parseDenyList(await readFile(DENY_LIST_FILE, 'utf8'));
  });

  test('AGT-2: denies what Docker’s default profile denies without capabilities, and io_uring, with EPERM', () => {
    for (const name of [
      'io_uring_setup',
      'io_uring_enter',
      'io_uring_register',
      'keyctl',
      'add_key',
      'request_key',
      'bpf',
      'perf_event_open',
      'userfaultfd',
      'kexec_load',
      'kexec_file_load',
      'init_module',
      'finit_module',
      'delete_module',
      'mount',
      'umount2',
      'pivot_root',
      'fsopen',
      'move_mount',
      'open_tree',
      'unshare',
      'setns',
      'ptrace',
      'process_vm_readv',
      'process_vm_writev',
      'open_by_handle_at',
      'reboot',
      'swapon',
      'settimeofday',
      'clock_settime',
      'syslog',
      'acct',
    ]) {
      const rules = list.rules.filter((rule) => rule.name === name);
      assert.deepEqual(rules, [{ name, errno: EPERM, arg: null }], name);
    }
    assert.ok(!list.names.includes('clone_x'));
  });

  test('AGT-2: clone is denied only with a namespace flag; clone3 is ENOSYS, so libcs fall back to clone', () => {
    const flags = {
      CLONE_NEWNS: 0x20000,
      CLONE_NEWCGROUP: 0x2000000,
      CLONE_NEWUTS: 0x4000000,
      CLONE_NEWIPC: 0x8000000,
      CLONE_NEWUSER: 0x10000000,
      CLONE_NEWPID: 0x20000000,
      CLONE_NEWNET: 0x40000000,
    };
    // What glibc passes for a thread and for fork.
    const thread = 0x3d0f00n;
    const fork = 0x1200011n;
    assert.ok(!denied(list.rules, 'clone', thread) && !denied(list.rules, 'clone', fork));
    for (const [flag, bit] of Object.entries(flags)) {
      assert.ok(denied(list.rules, 'clone', thread | BigInt(bit)), flag);
    }
    assert.deepEqual(
      list.rules.filter((rule) => rule.name === 'clone3'),
      [{ name: 'clone3', errno: ENOSYS, arg: null }],
    );
  });

  test('AGT-2: personality only to Linux, PER_LINUX32, UNAME26 or both, and the query; nothing else', () => {
    const allowed = [0n, 8n, 0x20000n, 0x20008n, 0xffffffffn];
    for (const value of allowed) assert.ok(!denied(list.rules, 'personality', value), value.toString(16));
    const samples = [
      1n,
      7n,
      9n,
      0x0040000n, // ADDR_NO_RANDOMIZE
      0x0400000n, // READ_IMPLIES_EXEC
      0x0100000n, // MMAP_PAGE_ZERO
      0xfffffff7n,
      0xfffdffffn,
      0xfffdfff7n,
      0x7fffffffn,
      0x100000000n,
      0x100000008n,
      U64,
    ];
    for (let bit = 0n; bit < 64n; bit++) samples.push(1n << bit, 0xffffffffn ^ (1n << bit));
    for (let i = 0; i < 2000; i++) samples.push(BigInt(randomBytes(4).readUInt32BE(0)) >> BigInt(i % 32));
    for (const value of samples) {
      assert.equal(denied(list.rules, 'personality', value), !allowed.includes(value), value.toString(16));
    }
  });

  test('AGT-2: sockets of every family but AF_VSOCK (not network-namespaced)', () => {
    assert.ok(denied(list.rules, 'socket', 40n));
    for (const family of [1n, 2n, 10n, 16n]) assert.ok(!denied(list.rules, 'socket', family));
  });

  test('a bad line is refused with its number, never skipped', () => {
    assert.match(listError('keyctl\n').message, /line 1: a syscall before the first/);
    assert.match(listError('== why\nkey-ctl\n').message, /line 2: "key-ctl" is not a syscall name/);
    assert.match(listError('== why\nkeyctl\nkeyctl\n').message, /line 3: keyctl is listed twice/);
    assert.match(listError('==\nkeyctl\n').message, /line 1: a group needs a reason/);
    assert.match(listError('== why\nclone3 errno=EWHATEVER\n').message, /unknown errno "EWHATEVER"/);
    assert.match(listError('== why\nsocket if arg0 = 40\n').message, /expected "if argN == V"/);
    assert.match(listError('== why\nsocket if arg9 == 40\n').message, /expected arg0 … arg5/);
    assert.match(listError('== why\nsocket if arg0 == 0x1ffffffff\n').message, /expected a number/);
    assert.match(listError('== why\nsocket if arg0 == 4294967296\n').message, /wider than 32 bits/);
    assert.match(listError('== why\nclone if arg0 & 0\n').message, /the mask is 0/);
    assert.match(
      listError('== why\npersonality unless arg0 in 0x0 0x8 0x20000\n').message,
      /every combination of some flags/,
    );
    assert.match(listError('# nothing\n== why\n').message, /denies nothing/);
  });

  test('comments, blank lines and errno names parse as written', () => {
    const parsed = parseDenyList(
      '# header\n\n== keys: why\nkeyctl   # trailing\n== other\nclone3 errno=ENOSYS\nsocket if arg0 == 0x28\n',
    );
    assert.deepEqual(parsed.names, ['keyctl', 'clone3', 'socket']);
    assert.deepEqual(parsed.rules, [
      { name: 'keyctl', errno: EPERM, arg: null },
      { name: 'clone3', errno: ENOSYS, arg: null },
      { name: 'socket', errno: EPERM, arg: { index: 0, op: 'eq', value: 40 } },
    ]);
  });
});

describe('building the program with python3-seccomp', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'enclave-seccomp-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('AGT-2: the list builds into a BPF program of whole instructions; unknown names are skipped with a note', async (t) => {
    if (!requireTool(t, SYSTEM_PYTHON, 'python3-seccomp', ['-c', 'import seccomp'])) return;
    const program = await buildSeccompProgram();
    assert.ok(program.ok, program.ok ? '' : program.reason);
    assert.ok(program.bpf.length > 0 && program.bpf.length % 8 === 0 && program.bpf.length <= 4096 * 8);
    for (const name of ['io_uring_setup', 'keyctl', 'bpf', 'ptrace', 'clone', 'personality']) {
      assert.ok(program.denied.includes(name), name);
    }
    // vm86 is a syscall of 32-bit x86 only.
    if (process.arch === 'x64' || process.arch === 'arm64') assert.ok(program.skipped.includes('vm86'));
    const file = path.join(dir, 'unknown.list');
    await writeFile(file, '== why\nkeyctl\nno_such_syscall_at_all\n');
    const partial = await buildSeccompProgram({ listFile: file });
    assert.ok(partial.ok);
    assert.deepEqual([partial.denied, partial.skipped], [['keyctl'], ['no_such_syscall_at_all']]);
  });

  test('AGT-2: without the tools or with a bad list, the reason says why and names no host path', async () => {
    const missing = await buildSeccompProgram({ python: path.join(dir, 'no-python') });
    assert.deepEqual(missing, {
      ok: false,
      reason: "Debian's python3 with python3-seccomp is not installed",
    });
    const file = path.join(dir, 'bad.list');
    await writeFile(file, '== why\nkeyctl\nmount if arg0 =\n');
    const bad = await buildSeccompProgram({ listFile: file });
    assert.ok(!bad.ok);
    assert.match(bad.reason, /^denied-syscalls\.list line 3: /);
    const gone = await buildSeccompProgram({ listFile: path.join(dir, 'gone.list') });
    assert.deepEqual(gone, { ok: false, reason: 'the list of denied syscalls cannot be read' });
    for (const result of [missing, bad, gone]) assert.ok(!result.ok && !result.reason.includes(dir));
  });
});
