import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hasTool, requireTool } from '../../test/helpers/system-tools.ts';
import { type HostLimitSupport, hostLimitSupport } from '../agents/runtime/limits.ts';
import { sandboxLimitsCheck, sandboxLimitsLine } from './doctor.ts';

// `enclave doctor` says what this host enforces per instance (AGT-6), and
// which limits it cannot hold would make instances refuse to start: an
// operator learns it before an agent's page does.

let instancesDir: string;

before(async () => {
  instancesDir = await mkdtemp(path.join(tmpdir(), 'enclave-doctor-'));
  await chmod(instancesDir, 0o711);
});
after(() => rm(instancesDir, { recursive: true, force: true }));

describe('enclave doctor: sandbox limits', () => {
  test('AGT-6: doctor reports what the host enforces, and which limits would refuse a start unless allowed by name', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const support = await hostLimitSupport(instancesDir);
    const strict = await sandboxLimitsCheck({ instancesDir, unenforcedLimits: [] });
    const lenient = await sandboxLimitsCheck({
      instancesDir,
      unenforcedLimits: ['cpu', 'processes', 'volume'],
    });
    assert.equal(strict.name, 'sandbox limits');
    assert.ok(support.sandbox.ok, `a probe sandbox starts here: ${JSON.stringify(support.sandbox)}`);
    const missing = (['cpu', 'processes', 'volume'] as const).filter((limit) => !support[limit]);
    if (missing.length === 0) {
      assert.match(strict.detail, /cpu, processes and volume enforced; memory (hard|measured)/);
      assert.equal(strict.fix, undefined);
    } else {
      assert.equal(strict.status, 'warn');
      assert.match(
        strict.detail,
        new RegExp(`instances refuse to start: ${missing.join(', ')} cannot be enforced`),
      );
      assert.match(strict.fix ?? '', new RegExp(`ENCLAVE_UNENFORCED_LIMITS=${missing.join(',')}`));
      assert.match(lenient.detail, new RegExp(`allowed by ENCLAVE_UNENFORCED_LIMITS: ${missing.join(', ')}`));
      assert.equal(lenient.fix, undefined);
    }
    assert.match(
      strict.detail,
      support.volume ? /volume: an ext4 image per instance/ : /volume: no hard limit \(/,
    );
    // With a C compiler the sandbox's native helpers are built where the driver looks for them.
    assert.match(
      strict.detail,
      hasTool('cc')
        ? /native launcher and starter: built/
        : /native launcher and starter: none \(no C compiler/,
    );
    assert.deepEqual(
      support.uidConflicts,
      [],
      'no user or subordinate range claims the instances’ uids here',
    );
    if (process.getuid?.() === 0) {
      assert.match(strict.detail, /host uid: each instance runs as a host uid of its own, never root/);
      assert.ok(
        support.processes,
        'as root, RLIMIT_NPROC on the own host uid holds processes without cgroups',
      );
    }
  });
});

describe('enclave doctor: a line says what is wrong, with a matching status', () => {
  const sound: HostLimitSupport = {
    memory: true,
    processes: true,
    openFiles: true,
    cpu: true,
    volume: true,
    sandbox: { ok: true },
    uidConflicts: [],
    seccomp: true,
    how: 'cgroup v2: memory, pids, cpu; a probe sandbox starts',
  };

  test('a sound host is ok', () => {
    const line = sandboxLimitsLine(sound, { unenforcedLimits: [] });
    assert.equal(line.status, 'ok');
    assert.equal(line.fix, undefined);
  });

  test('AGT-6: a probe sandbox that fails is a warning that leads with the error, not an ok line that contains it', () => {
    const reason = "bwrap: Can't find source path /srv/enclave/instances/x: Permission denied";
    const line = sandboxLimitsLine(
      {
        ...sound,
        sandbox: { ok: false, reason },
        how: `cgroup v2: memory; a probe sandbox fails: ${reason}`,
      },
      { unenforcedLimits: [] },
    );
    assert.equal(line.status, 'warn');
    assert.equal(line.detail, `instances cannot start here: ${reason}`);
    assert.ok(line.fix !== undefined);
  });

  test('AGT-6: each gap alone turns the line into a warning that names it first', () => {
    const gaps: [Partial<HostLimitSupport>, RegExp][] = [
      [{ memory: false }, /^memory measured, not a hard limit;/],
      [{ openFiles: false }, /^open files not enforced;/],
      [{ seccomp: false }, /^no seccomp filter;/],
      [{ cpu: false }, /^instances refuse to start: cpu cannot be enforced;/],
      [{ uidConflicts: ['user alice'] }, /^the instances' host uids are also claimed by user alice;/],
    ];
    for (const [gap, says] of gaps) {
      const line = sandboxLimitsLine({ ...sound, ...gap }, { unenforcedLimits: [] });
      assert.equal(line.status, 'warn', JSON.stringify(gap));
      assert.match(line.detail, says);
    }
    const both = sandboxLimitsLine(
      { ...sound, cpu: false, uidConflicts: ['user alice'] },
      { unenforcedLimits: [] },
    );
    assert.match(both.fix ?? '', /ENCLAVE_UNENFORCED_LIMITS=cpu; and leave uids/, 'both fixes are given');
  });
});
