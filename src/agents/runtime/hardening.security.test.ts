// Attack: code running as an agent reaches for the kernel past its namespaces — io_uring, the keyring, BPF, perf events, userfaultfd, new namespaces, mounts, ptrace, AF_VSOCK (which no network namespace stops), a new personality — reads what container runtimes hide in /proc (timer_list, keys, kcore, sched_debug), or fills a tmpfs (/dev, /tmp, /dev/shm) past its memory limit.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hasTool, requireTool } from '../../../test/helpers/system-tools.ts';
import { createLogger } from '../../logger.ts';
import { listenHostSocket, removeHostSocket } from './host-sockets.ts';
import { detectCgroups } from './limits.ts';
import { createRuntime, probeSpec, type Runtime, SMALL_LIMITS, shell } from './sandbox-fixtures.testing.ts';
import { detectSandboxHost, findExecutable } from './sandbox-host.ts';
import { launchSandbox, SandboxRefusal, terminate, waitReady } from './sandbox-run.ts';
import { SYSTEM_PYTHON } from './seccomp/seccomp.ts';
import { detectVolumeImages } from './volume-image.ts';

const MIB = 1024 * 1024;
let rt: Runtime;
let tenantId: string;
let agentId: string;

before(async () => {
  rt = await createRuntime();
  if (!hasTool('bwrap')) return;
  tenantId = await rt.tenant('hardening');
  agentId = await rt.agent(tenantId);
  await rt.driver.start(probeSpec(rt, { tenantId, agentId }));
});

after(() => rt.close());

/**
 * Each probe is a Perl expression (perl-base is on every Debian system; the
 * sandbox binds /usr) making one raw syscall, `NR` standing for its number
 * on this architecture. Pointers are zeroed buffers.
 */
const DENIED: Record<string, string> = {
  io_uring_setup: 'my $p = "\\0" x 120; syscall(NR, 1, $p)',
  keyctl: 'syscall(NR, 0, -3, 0)', // KEYCTL_GET_KEYRING_ID of the session keyring
  add_key: 'my ($t, $d) = ("user", "x"); syscall(NR, $t, $d, 0, 0, -3)',
  bpf: 'my $a = "\\0" x 128; syscall(NR, 0, $a, 128)',
  perf_event_open: 'my $a = "\\0" x 128; syscall(NR, $a, 0, -1, -1, 0)',
  userfaultfd: 'syscall(NR, 1)', // UFFD_USER_MODE_ONLY: allowed to unprivileged users by the kernel
  unshare: 'syscall(NR, 0x10000000)', // CLONE_NEWUSER
  setns: 'syscall(NR, 0, 0)',
  mount: 'my ($s, $t, $f) = ("none", "/tmp", "tmpfs"); syscall(NR, $s, $t, $f, 0, 0)',
  ptrace: 'syscall(NR, 0, 0, 0, 0)', // PTRACE_TRACEME
  process_vm_readv: 'syscall(NR, 1, 0, 0, 0, 0, 0)',
  kexec_load: 'syscall(NR, 0, 0, 0, 0)',
  init_module: 'my $m = "\\0" x 64; my $o = ""; syscall(NR, $m, 64, $o)',
  personality: 'syscall(NR, 0x0040000)', // ADDR_NO_RANDOMIZE
  socket: 'syscall(NR, 40, 1, 0)', // AF_VSOCK, SOCK_STREAM
};

/** The syscall numbers of this architecture, as libseccomp knows them. */
function syscallNumbers(names: readonly string[]): Record<string, number> {
  const source = `import json, seccomp, sys\nprint(json.dumps({n: seccomp.resolve_syscall(seccomp.Arch.NATIVE, n) for n in sys.argv[1:]}))`;
  return JSON.parse(execFileSync(SYSTEM_PYTHON, ['-c', source, ...names], { encoding: 'utf8' }));
}

/** A shell line running perl on `probes`, each printing `name result errno`. */
function perlProbes(probes: Record<string, string>, numbers: Record<string, number>): string {
  const body = Object.entries(probes)
    .map(([name, call]) => {
      const expression = call.replaceAll('NR', String(numbers[name]));
      return `{ $! = 0; my $r = do { ${expression} }; printf "%s %d %d\\n", "${name}", $r, $! + 0; }`;
    })
    .join('\n');
  return `perl <<'PERL'\n${body}\nPERL\n`;
}

function results(stdout: string): Record<string, { result: number; errno: number }> {
  const found: Record<string, { result: number; errno: number }> = {};
  for (const line of stdout.trim().split('\n')) {
    const [name = '', result, errno] = line.split(' ');
    found[name] = { result: Number(result), errno: Number(errno) };
  }
  return found;
}

describe('AGT-2: the sandbox’s seccomp filter', () => {
  test('AGT-2: io_uring, the keyring, BPF, perf events, userfaultfd, namespaces, mounts, ptrace, AF_VSOCK and personality changes fail with EPERM', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    if (!requireTool(t, SYSTEM_PYTHON, 'python3-seccomp', ['-c', 'import seccomp'])) return;
    const numbers = syscallNumbers([...Object.keys(DENIED), 'clone3']);
    const run = await shell(rt, agentId, perlProbes(DENIED, numbers));
    assert.equal(run.stderr, '');
    const found = results(run.stdout);
    for (const name of Object.keys(DENIED)) {
      assert.deepEqual(found[name], { result: -1, errno: 1 }, `${name}: ${run.stdout}`);
    }
    const clone3 = await shell(rt, agentId, perlProbes({ clone3: 'syscall(NR, 0, 0)' }, numbers));
    assert.deepEqual(results(clone3.stdout).clone3, { result: -1, errno: 38 }, 'clone3: ENOSYS');
  });

  test('AGT-2: what the filter allows still works: the personality query, inet sockets, fork and threads', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    if (!requireTool(t, SYSTEM_PYTHON, 'python3-seccomp', ['-c', 'import seccomp'])) return;
    const numbers = syscallNumbers(['personality', 'socket']);
    const run = await shell(
      rt,
      agentId,
      perlProbes({ personality: 'syscall(NR, 0xffffffff)', socket: 'syscall(NR, 2, 1, 0)' }, numbers),
    );
    const found = results(run.stdout);
    assert.ok((found.personality?.result ?? -1) >= 0 && (found.socket?.result ?? -1) >= 0, run.stdout);
    const forked = await shell(
      rt,
      agentId,
      `(echo child) & wait; node -e 'const w = require("worker_threads"); new w.Worker("require(\`worker_threads\`).parentPort.postMessage(1)", { eval: true }).on("message", (m) => console.log("thread", m))' 2>&1; grep -E "^(Seccomp|NoNewPrivs):" /proc/self/status`,
    );
    assert.equal(forked.stdout, 'child\nthread 1\nNoNewPrivs:\t1\nSeccomp:\t2\n', forked.stderr);
  });
});

describe('AGT-2: /proc and /sys inside the sandbox', () => {
  test('AGT-2: the /proc entries container runtimes mask are unreadable or empty, and there is no /sys', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const files = ['timer_list', 'kcore', 'keys', 'sched_debug', 'latency_stats', 'timer_stats'];
    const dirs = ['acpi', 'asound', 'scsi'];
    const run = await shell(
      rt,
      agentId,
      [
        ...files.map((name) => `echo "${name} $(cat /proc/${name} 2>/dev/null | wc -c)"`),
        ...dirs.map((name) => `echo "${name} $(ls -A /proc/${name} 2>/dev/null | wc -l)"`),
        'touch /proc/acpi/x 2>/dev/null || echo "acpi read-only"',
        'test -e /sys || echo "no /sys"',
      ].join('\n'),
    );
    assert.equal(
      run.stdout,
      `${[...files, ...dirs].map((name) => `${name} 0\n`).join('')}acpi read-only\nno /sys\n`,
    );
    // The rest of /proc works: the agent's own processes, memory and CPU figures.
    const rest = await shell(
      rt,
      agentId,
      'head -1 /proc/meminfo | cut -d: -f1; test -r /proc/self/status && echo ok',
    );
    assert.equal(rest.stdout, 'MemTotal\nok\n');
  });
});

describe('AGT-6: every tmpfs in the sandbox is bounded', () => {
  test('AGT-6: nothing can be written into /dev, and its devices still work', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const run = await shell(
      rt,
      agentId,
      [
        // 64 MiB in files of 8 MiB (RLIMIT_FSIZE caps any one file at the volume limit).
        `i=0; while [ $i -lt 8 ] && head -c ${8 * MIB} /dev/zero > /dev/fill$i 2>/dev/null; do i=$((i+1)); done; echo "wrote $i of 8"`,
        'mkdir /dev/dir 2>/dev/null || echo "mkdir refused"',
        'ls /dev | grep -c fill',
        'rm -f /dev/fill*',
        'echo x > /dev/null && echo "null ok"',
        'echo "zero $(head -c 4096 /dev/zero | wc -c) urandom $(head -c 16 /dev/urandom | wc -c) random $(head -c 16 /dev/random | wc -c)"',
        'echo x 2>/dev/null > /dev/full || echo "full is full"',
        `perl -e 'open(my $f, "+<", "/dev/ptmx") or die "$!"; print "pty ok\\n"'`,
      ].join('\n'),
    );
    assert.equal(
      run.stdout,
      'wrote 0 of 8\nmkdir refused\n0\nnull ok\nzero 4096 urandom 16 random 16\nfull is full\npty ok\n',
      run.stderr,
    );
  });

  test('AGT-6: /tmp and /dev/shm fill up at their sizes, which together stay within the memory limit', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const tmpMb = SMALL_LIMITS.memoryMb / 2;
    const shmMb = SMALL_LIMITS.memoryMb / 4;
    for (const [dir, sizeMb] of [
      ['/tmp', tmpMb],
      ['/dev/shm', shmMb],
    ] as const) {
      const run = await shell(
        rt,
        agentId,
        // In files of 8 MiB: RLIMIT_FSIZE (the volume limit) caps any one file.
        `i=0; while head -c ${8 * MIB} /dev/zero > ${dir}/fill$i 2>/dev/null; do i=$((i+1)); [ $i -gt 64 ] && break; done; cat ${dir}/fill* | wc -c; rm ${dir}/fill*`,
      );
      assert.equal(run.stdout, `${sizeMb * MIB}\n`, dir);
    }
    assert.ok(tmpMb + shmMb <= SMALL_LIMITS.memoryMb);
    assert.equal(rt.driver.status(agentId).state, 'running');
  });
});

describe('AGT-2: a host without a seccomp filter', () => {
  test('AGT-2: an instance refuses to start without the filter, unless the operator lets seccomp go unenforced', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const real = await detectSandboxHost();
    const host = {
      sandbox: { ...real, seccomp: { ok: false, reason: 'python3-seccomp is not installed' } as const },
      cgroups: await detectCgroups(),
      volumes: await detectVolumeImages(rt.instancesDir, {
        unshare: real.tools.unshare,
        find: findExecutable,
      }),
    };
    const log = createLogger('silent');
    // An egress socket that goes nowhere: nothing in this test leaves the instance.
    const egress = {
      listen: async (socketPath: string) => {
        const listener = await listenHostSocket(path.dirname(socketPath), path.basename(socketPath), 0o666);
        return {
          close: async () => {
            listener.server.close();
            await removeHostSocket(listener.path);
          },
        };
      },
    };
    const deps = { instancesDir: rt.instancesDir, egress, log, unenforcedLimits: [] };
    const id = await rt.agent(tenantId);
    const spec = probeSpec(rt, { tenantId, agentId: id });
    await assert.rejects(
      launchSandbox(deps, spec, host),
      new SandboxRefusal('the sandbox has no seccomp filter on this host (python3-seccomp is not installed)'),
    );
    const run = await launchSandbox({ ...deps, unenforcedLimits: ['seccomp'] }, spec, host);
    await waitReady(run, spec, 20_000, new AbortController().signal);
    const status = await shell(rt, id, 'grep "^Seccomp:" /proc/self/status');
    assert.equal(status.stdout, 'Seccomp:\t0\n');
    await terminate(run, 0);
    const logged = await readFile(path.join(rt.instancesDir, id, 'output.log'), 'utf8');
    assert.match(logged, /no seccomp filter \(python3-seccomp is not installed\): allowed by the operator/);
  });
});
