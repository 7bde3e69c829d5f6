import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool } from '../../test/helpers/system-tools.ts';
import { hostLimitSupport } from '../agents/runtime/limits.ts';
import { sandboxLimitsCheck } from './doctor.ts';

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
      assert.match(strict.detail, /^cpu, processes and volume enforced; memory (hard|measured)/);
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
