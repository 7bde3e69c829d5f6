import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  bwrapArgs,
  etcFiles,
  HOST_ETC_CANDIDATES,
  launchArgv,
  probeArgv,
  proxyPortFor,
  SANDBOX_UID,
  type SandboxLayout,
  STAGE_MOUNT_POINTS,
  sandboxCommand,
  sandboxHostUid,
  stageFstab,
  stageLayout,
  supervisorArgv,
} from './bwrap-args.ts';
import type { InstanceSpec } from './driver.ts';
import { sandboxOptions } from './instance-dir.ts';
import { rlimitArgs, startRefusal } from './limits.ts';
import type { SandboxHost } from './sandbox-host.ts';

// What the sandbox is made of (AGT-2), read from the argv alone: the
// namespaces, every bind and where it lands, and the host command line
// around bubblewrap, which must carry no secret.

const layout: SandboxLayout = {
  templateDir: '/srv/templates',
  volumeDir: '/var/lib/enclave/instances/a/volume',
  egressSocket: '/var/lib/enclave/instances/a/host/egress.sock',
  etcDir: '/var/lib/enclave/instances/a/etc',
  nodeBinary: '/usr/local/bin/node',
  starterBinary: '/var/lib/enclave/instances/.native/enclave-starter-0123456789abcdef',
  supervisorDir: '/opt/app/src/agents/runtime/supervisor',
  nodeModulesDir: '/opt/app/node_modules',
  systemEntries: [
    { path: '/bin', kind: 'symlink', target: 'usr/bin' },
    { path: '/lib', kind: 'symlink', target: 'usr/lib' },
    { path: '/lib64', kind: 'dir' },
  ],
  hostEtc: ['/etc/ssl/certs', '/etc/ld.so.cache'],
  procMasks: [
    { path: '/proc/acpi', kind: 'dir' },
    { path: '/proc/timer_list', kind: 'file' },
  ],
};
const options = { tmpMb: 64, shmMb: 16, disableUserns: true, seccomp: true };

/** Pairs of [source, destination] for a bind option. */
function binds(args: readonly string[], option: string): [string, string][] {
  const found: [string, string][] = [];
  args.forEach((arg, i) => {
    if (arg === option) found.push([args[i + 1] as string, args[i + 2] as string]);
  });
  return found;
}

describe('bwrapArgs', () => {
  const args = bwrapArgs(layout, options);

  test('AGT-2: every namespace of its own (network: loopback only), no capability, a new session, dies with its parent', () => {
    for (const flag of [
      '--unshare-user',
      '--unshare-pid',
      '--unshare-ipc',
      '--unshare-uts',
      '--unshare-cgroup',
      '--unshare-net',
      '--disable-userns',
      '--new-session',
      '--die-with-parent',
      '--clearenv',
    ]) {
      assert.ok(args.includes(flag), flag);
    }
    assert.ok(!args.includes('--share-net'));
    assert.deepEqual(args.slice(args.indexOf('--cap-drop'), args.indexOf('--cap-drop') + 2), [
      '--cap-drop',
      'ALL',
    ]);
    assert.equal(args[args.indexOf('--uid') + 1], String(SANDBOX_UID));
    assert.equal(args[args.indexOf('--gid') + 1], String(SANDBOX_UID));
    assert.ok(!bwrapArgs(layout, { ...options, disableUserns: false }).includes('--disable-userns'));
  });

  test('AGT-2, AGT-3: read-write only the volume at /data; of the host directory only the egress socket, read-only; the rest read-only', () => {
    assert.deepEqual(binds(args, '--bind'), [[layout.volumeDir, '/data']]);
    assert.deepEqual(binds(args, '--ro-bind'), [
      ['/usr', '/usr'],
      ['/lib64', '/lib64'],
      ['/etc/ssl/certs', '/etc/ssl/certs'],
      ['/etc/ld.so.cache', '/etc/ld.so.cache'],
      [`${layout.etcDir}/passwd`, '/etc/passwd'],
      [`${layout.etcDir}/group`, '/etc/group'],
      [`${layout.etcDir}/hosts`, '/etc/hosts'],
      [`${layout.etcDir}/nsswitch.conf`, '/etc/nsswitch.conf'],
      ['/dev/null', '/proc/timer_list'],
      [layout.egressSocket, '/run/enclave/egress.sock'],
      [layout.templateDir, '/app'],
      [layout.nodeBinary, '/opt/enclave/bin/node'],
      [layout.starterBinary, '/opt/enclave/bin/enclave-starter'],
      [layout.supervisorDir, '/opt/enclave/supervisor'],
      [layout.nodeModulesDir, '/opt/enclave/node_modules'],
    ]);
    assert.deepEqual(binds(args, '--symlink'), [
      ['usr/bin', '/bin'],
      ['usr/lib', '/lib'],
    ]);
    assert.ok(!args.includes('--dev-bind') && !args.includes('--bind-try'));
    assert.equal(args[args.lastIndexOf('--remount-ro') + 1], '/');
    assert.equal(args[args.indexOf('--chdir') + 1], '/app');
  });

  test('AGT-2: /proc read-only with the entries container runtimes mask covered, /dev read-only, no /sys', () => {
    assert.deepEqual(args.slice(args.indexOf('--proc'), args.indexOf('/tmp') + 1), [
      '--proc',
      '/proc',
      '--size',
      '4096',
      '--tmpfs',
      '/proc/acpi',
      '--remount-ro',
      '/proc/acpi',
      '--ro-bind',
      '/dev/null',
      '/proc/timer_list',
      '--remount-ro',
      '/proc',
      '--dev',
      '/dev',
      '--remount-ro',
      '/dev',
      '--perms',
      '1777',
      '--size',
      String(16 * 1024 * 1024),
      '--tmpfs',
      '/dev/shm',
      '--perms',
      '1777',
      '--size',
      String(64 * 1024 * 1024),
      '--tmpfs',
      '/tmp',
    ]);
    assert.ok(!args.some((arg) => arg === '/sys' || arg.startsWith('/sys/')));
  });

  test('AGT-6: every tmpfs bubblewrap is asked for has a size', () => {
    args.forEach((arg, i) => {
      if (arg === '--tmpfs') assert.equal(args[i - 2], '--size', `${args[i + 1]} has a size`);
    });
  });

  test('AGT-6: /tmp and /dev/shm together stay within the memory limit', () => {
    const host = { disableUserns: true, seccomp: { ok: false, reason: 'none' } } as const;
    for (const memoryMb of [32, 33, 100, 160, 192, 511, 1024, 65536]) {
      const spec = { limits: { memoryMb } } as const;
      const sized = sandboxOptions(spec as unknown as InstanceSpec, host as unknown as SandboxHost);
      assert.ok(sized.tmpMb + sized.shmMb <= memoryMb, `${memoryMb} MiB: ${sized.tmpMb} + ${sized.shmMb}`);
      assert.ok(sized.tmpMb >= 16 && sized.shmMb >= 8, `${memoryMb} MiB: usable sizes`);
    }
  });

  test('AGT-2: the seccomp program is loaded from fd 8 when the host has one', () => {
    assert.deepEqual(args.slice(args.indexOf('--seccomp'), args.indexOf('--seccomp') + 2), [
      '--seccomp',
      '8',
    ]);
    assert.ok(!bwrapArgs(layout, { ...options, seccomp: false }).includes('--seccomp'));
  });

  test('AGT-2: nothing of the host’s secrets or other data is named', () => {
    const text = args.join('\n');
    for (const forbidden of [
      '/etc/shadow',
      '/etc/ssl/private',
      '/root',
      '/home',
      '/var/run',
      '/work',
      'instances/b',
    ]) {
      assert.ok(!text.includes(forbidden), forbidden);
    }
    assert.ok(!HOST_ETC_CANDIDATES.some((file) => file.includes('shadow') || file.includes('private')));
    assert.deepEqual(args.slice(args.indexOf('--clearenv'), args.indexOf('--clearenv') + 10), [
      '--clearenv',
      '--setenv',
      'PATH',
      '/opt/enclave/bin:/usr/local/bin:/usr/bin:/bin',
      '--setenv',
      'HOME',
      '/data',
      '--setenv',
      'LANG',
      'C.UTF-8',
    ]);
  });

  test('the generated /etc: one agent user with uid 1000 and home /data, loopback names, lookups in files', () => {
    const files = etcFiles();
    assert.match(files.passwd ?? '', /^agent:x:1000:1000:agent:\/data:\/bin\/sh$/m);
    for (const line of (files.passwd ?? '').trim().split('\n'))
      assert.equal(line.split(':')[1], 'x', 'no password');
    assert.match(files.hosts ?? '', /^127\.0\.0\.1\tlocalhost/m);
    assert.match(files['nsswitch.conf'] ?? '', /^hosts: files$/m);
  });
});

describe('the host command line', () => {
  const bwrap = bwrapArgs(layout, options);
  const launch = {
    shell: '/bin/sh',
    cgroupProcs: [
      '/sys/fs/cgroup/pids/enclave/a/cgroup.procs',
      '/sys/fs/cgroup/memory/enclave/a/cgroup.procs',
    ],
    rlimits: ['--nofile=64:64'],
    prlimit: '/usr/bin/prlimit',
    stage: { unshare: '/usr/bin/unshare', fstab: '/data/instances/a/stage.fstab' },
    setpriv: { binary: '/usr/bin/setpriv', uid: 1_577_058_305 },
    bwrap: '/usr/bin/bwrap',
    starter: true,
    launcher: undefined,
  };

  test('AGT-2: without the native launcher: prlimit, a mount namespace of its own, one shell that joins the cgroups and stages as root, the drop to the host uid, then bubblewrap runs the starter', () => {
    const argv = launchArgv(launch, bwrap);
    assert.deepEqual(argv.slice(0, 3), ['/usr/bin/prlimit', '--nofile=64:64', '--']);
    assert.deepEqual(argv.slice(3, 8), ['/usr/bin/unshare', '--mount', '--propagation', 'private', '--']);
    assert.deepEqual(argv.slice(8, 10), ['/bin/sh', '-c']);
    // Paths are parameters of the shell's script, never part of its text.
    assert.ok(!(argv[10] ?? '').includes('/data/instances') && !(argv[10] ?? '').includes('/sys/fs'));
    assert.deepEqual(argv.slice(11, 16), [
      'enclave-launch',
      '/data/instances/a/stage.fstab',
      ...launch.cgroupProcs,
      '--',
    ]);
    assert.deepEqual(argv.slice(16, 23), [
      '/usr/bin/setpriv',
      '--reuid',
      '1577058305',
      '--regid',
      '1577058305',
      '--clear-groups',
      '--',
    ]);
    assert.deepEqual(argv.slice(23, 24 + bwrap.length), ['/usr/bin/bwrap', ...bwrap]);
    assert.deepEqual(argv.slice(-supervisorArgv(true).length - 1), ['--', ...supervisorArgv(true)]);
    assert.equal(supervisorArgv(true)[0], '/opt/enclave/bin/enclave-starter');
    assert.deepEqual(supervisorArgv(true).slice(1), [...supervisorArgv(false), '--starter']);
  });

  test('AGT-2: a worker that is not root: no mount namespace and no uid drop; no rlimits without prlimit', () => {
    const argv = launchArgv({ ...launch, stage: undefined, setpriv: undefined, prlimit: undefined }, bwrap);
    assert.deepEqual(argv.slice(0, 2), ['/bin/sh', '-c']);
    assert.deepEqual(argv.slice(3, 8), ['enclave-launch', '', ...launch.cgroupProcs, '--']);
    assert.equal(argv[8], '/usr/bin/bwrap');
    assert.ok(!argv.includes('--nofile=64:64'));
  });

  test('AGT-2: with the native launcher: one process takes the cgroups, the rlimits, the stage and the host uid, then bubblewrap', () => {
    const launcher = '/var/lib/enclave/instances/.native/enclave-launch-0123456789abcdef';
    // The cgroups (joined while the rest goes on) and the rlimits, as prlimit takes them.
    const head = [
      launcher,
      '--cgroup',
      launch.cgroupProcs[0],
      '--cgroup',
      launch.cgroupProcs[1],
      '--nofile=64:64',
    ];
    const argv = launchArgv({ ...launch, launcher }, bwrap);
    assert.deepEqual(argv.slice(0, 13), [
      ...head,
      '--stage',
      '/data/instances/a/stage.fstab',
      '--uid',
      '1577058305',
      '--',
      '/usr/bin/bwrap',
      ...bwrap.slice(0, 1),
    ]);
    for (const tool of ['/usr/bin/prlimit', '/usr/bin/unshare', '/bin/sh', '/usr/bin/setpriv']) {
      assert.ok(!argv.includes(tool), tool);
    }
    const unstaged = launchArgv({ ...launch, launcher, stage: undefined, setpriv: undefined }, bwrap);
    assert.deepEqual(unstaged.slice(0, unstaged.indexOf('--')), head);
  });

  test('the probe is the same sandbox running true, with no cgroup or rlimit', () => {
    for (const launcher of [undefined, '/x/enclave-launch']) {
      const probe = probeArgv(
        { ...launch, cgroupProcs: ['/x/cgroup.procs'], stage: undefined, launcher },
        bwrap,
      );
      assert.ok(!probe.includes('/x/cgroup.procs') && !probe.includes('--nofile=64:64'));
      assert.deepEqual(probe.slice(-2), ['--', '/usr/bin/true']);
      assert.deepEqual(probe.slice(probe.indexOf('/usr/bin/bwrap') + 1, -2), bwrap);
    }
  });
});

describe('the stage', () => {
  const stageDir = '/run/enclave-stage';
  // The system, and /dev/null over the /proc entries container runtimes mask: readable by every uid.
  const system = ['/usr', '/lib64', ...layout.hostEtc, '/dev/null'];

  test('AGT-2: staged, every bind of the sandbox but the system comes through the stage, so its host uid needs no host path', () => {
    for (const image of [true, false]) {
      const staged = stageLayout(layout, stageDir, image);
      const args = bwrapArgs(staged.layout, options);
      for (const [source] of [...binds(args, '--bind'), ...binds(args, '--ro-bind')]) {
        assert.ok(system.includes(source) || source.startsWith(`${stageDir}/`), source);
      }
      // Read-write only what was read-write before: the volume; the egress socket read-only.
      assert.deepEqual(
        staged.binds.filter((bind) => bind.kind === 'rw').map((bind) => bind.source),
        image ? [] : [layout.volumeDir],
      );
      assert.deepEqual(binds(args, '--bind'), [[`${stageDir}/data`, '/data']]);
      assert.ok(
        staged.binds.some((bind) => bind.kind === 'file' && bind.source === layout.egressSocket),
        'the egress socket is staged read-only',
      );
      // Every staged name has its mount point, of its kind, in the stage directory.
      for (const bind of staged.binds) {
        const point = STAGE_MOUNT_POINTS.find((entry) => entry.name === bind.name);
        assert.equal(point?.kind, bind.kind === 'file' ? 'file' : 'dir', bind.name);
      }
    }
  });

  test('AGT-2: the stage is one mount table: read-only nosuid nodev binds, the volume read-write, its image loop-mounted at data', () => {
    const staged = stageLayout(layout, stageDir, false);
    const lines = stageFstab(stageDir, staged.binds, undefined).trim().split('\n');
    assert.equal(lines.length, staged.binds.length);
    for (const [index, bind] of staged.binds.entries()) {
      const options = bind.kind === 'rw' ? 'bind,nosuid,nodev' : 'bind,ro,nosuid,nodev';
      assert.equal(lines[index], `${bind.source} ${stageDir}/${bind.name} none ${options} 0 0`);
    }
    const withImage = stageLayout(layout, stageDir, true);
    const imageLines = stageFstab(stageDir, withImage.binds, '/data/a/volume.ext4').trim().split('\n');
    assert.ok(!imageLines.some((line) => line.includes(' bind,nosuid')), 'nothing read-write but the image');
    assert.equal(imageLines.at(-1), `/data/a/volume.ext4 ${stageDir}/data ext4 loop,nosuid,nodev 0 0`);
  });

  test('AGT-2: a host path cannot split or end a line of the mount table: spaces, tabs, newlines and # are escaped', () => {
    const binds = [{ kind: 'dir', source: '/srv/my templates\t#x\n/etc ro\\é', name: 'app' } as const];
    const [line, ...rest] = stageFstab(stageDir, binds, undefined).split('\n');
    assert.deepEqual(rest, ['']);
    const fields = (line ?? '').split(' ');
    assert.equal(fields.length, 6);
    assert.equal(fields[0], '/srv/my\\040templates\\011\\043x\\012/etc\\040ro\\134\\303\\251');
  });
});

describe('commands, ports, uids and rlimits', () => {
  test('node is the bound binary, a path resolves against /app, a bare name stays for PATH', () => {
    assert.deepEqual(sandboxCommand(['node', 'echo/agent.mjs']), ['/opt/enclave/bin/node', 'echo/agent.mjs']);
    assert.deepEqual(sandboxCommand(['./bin/agent', '--port', '1']), ['/app/bin/agent', '--port', '1']);
    assert.deepEqual(sandboxCommand(['bin/../agent']), ['/app/agent']);
    assert.deepEqual(sandboxCommand(['/usr/bin/python3', 'x.py']), ['/usr/bin/python3', 'x.py']);
    assert.deepEqual(sandboxCommand(['python3']), ['python3']);
    assert.throws(() => sandboxCommand([]));
  });

  test('the proxy port never collides with the agent port', () => {
    assert.equal(proxyPortFor(8080), 3128);
    assert.equal(proxyPortFor(3128), 3129);
  });

  test('a host uid per agent: stable, in its own range, different for different agents', () => {
    const first = sandboxHostUid('3f1c2a8e-0000-4000-8000-000000000001');
    assert.equal(sandboxHostUid('3f1c2a8e-0000-4000-8000-000000000001'), first);
    assert.notEqual(sandboxHostUid('3f1c2a8e-0000-4000-8000-000000000002'), first);
    for (let i = 0; i < 100; i++) {
      const uid = sandboxHostUid(`agent-${i}`);
      assert.ok(uid >= 0x5e000000 && uid < 0x5f000000, String(uid));
    }
  });

  test('AGT-6: rlimits: open files, file size and no core dumps always; processes only where the pids cgroup cannot, and never an address-space cap', () => {
    const limits = { memoryMb: 128, processes: 32, openFiles: 256, cpuPercent: 100, volumeMb: 64 };
    assert.deepEqual(rlimitArgs(limits, { processesByCgroup: true, ownHostUid: true }), [
      '--nofile=256:256',
      `--fsize=${64 * 1024 * 1024}:${64 * 1024 * 1024}`,
      '--core=0:0',
    ]);
    assert.deepEqual(rlimitArgs(limits, { processesByCgroup: false, ownHostUid: true }).slice(3), [
      '--nproc=32:32',
    ]);
    // RLIMIT_NPROC counts every process of a host uid: never on a shared one (root).
    assert.ok(
      !rlimitArgs(limits, { processesByCgroup: false, ownHostUid: false }).some((arg) =>
        arg.startsWith('--nproc'),
      ),
    );
  });

  test('AGT-6: a start refuses each limit the host cannot hold, by name, unless the operator allowed it', () => {
    const none = { cpu: false, processes: false, volume: false };
    assert.equal(startRefusal({ cpu: true, processes: true, volume: true }, []), undefined);
    assert.equal(startRefusal(none, ['cpu', 'processes', 'volume']), undefined);
    const refusal = startRefusal(none, ['processes']) ?? '';
    assert.match(
      refusal,
      /^cpu_percent cannot be enforced on this host \(no cpu cgroup\); volume_mb cannot be enforced/,
    );
    assert.match(
      refusal,
      /the operator can let them go unenforced with ENCLAVE_UNENFORCED_LIMITS=cpu,volume$/,
    );
    assert.ok(!refusal.includes('processes'));
  });
});
