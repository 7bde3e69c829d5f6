import assert from 'node:assert/strict';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool } from '../../../test/helpers/system-tools.ts';
import { sandboxHostUid } from './bwrap-args.ts';
import {
  createRuntime,
  probeSpec,
  type Runtime,
  SMALL_LIMITS,
  sandboxProcesses,
  shell,
} from './sandbox-fixtures.testing.ts';
import { IMAGE_NAME, volumeImageBlocks } from './volume-image.ts';

// The attacks: an agent writes past volume_mb (found: 97 MiB written under
// volume_mb = 32 before the instance was stopped, after the fact); a bounded
// fork bomb on a host without cgroups, with the sandbox mapped to host root
// (found: 500 processes under processes = 64, RLIMIT_NPROC being per uid and
// ignored for root); a busy loop under cpu_percent = 50 with no cpu cgroup
// (found: a whole core); and a setuid file left in /data (found: mode 4755,
// owned by root on the host's disk). Real sandboxes, as root, on this host.

const MIB = 1024 * 1024;
let rt: Runtime;
let tenantId: string;

before(async () => {
  rt = await createRuntime();
  tenantId = await rt.tenant('host limits');
});
after(() => rt.close());

async function ids(): Promise<{ tenantId: string; agentId: string }> {
  return { tenantId, agentId: await rt.agent(tenantId) };
}

/** Fills /data with 1 MiB appends to two files in turn (so no single file meets RLIMIT_FSIZE) until a write fails. */
const FILL = `node -e "
const fs = require('fs');
let written = 0;
try { for (let n = 0; n < 4096; n++) { fs.appendFileSync('/data/fill' + (n % 2), Buffer.alloc(1 << 20, 1)); written++; } }
catch (e) { console.log(e.code); }
console.log(fs.statSync('/data/fill0').size + fs.statSync('/data/fill1').size);
"`;

/** A host pid inside the instance's sandbox (its mount namespace: /proc/<pid>/root is the sandbox's /). */
async function pidInside(agentId: string, file: string): Promise<number> {
  for (const pid of await sandboxProcesses(path.join(rt.instancesDir, agentId))) {
    if ((await stat(`/proc/${pid}/root${file}`).catch(() => undefined)) !== undefined) return pid;
  }
  throw new Error(`no process of the sandbox sees ${file}`);
}

describe('AGT-6: the volume is a hard limit', () => {
  test('AGT-6: a write past volume_mb fails inside with ENOSPC, and the host holds no more than the limit plus the documented slack', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap') || !requireTool(t, 'mkfs.ext4', 'e2fsprogs', ['-V'])) return;
    const who = await ids();
    const volumeMb = 32;
    await rt.driver.start(probeSpec(rt, who, { limits: { ...SMALL_LIMITS, volumeMb } }));
    t.after(() => rt.driver.stop(who.agentId));
    const filled = await shell(rt, who.agentId, FILL);
    const [code, total] = filled.stdout.trim().split('\n');
    assert.equal(code, 'ENOSPC', filled.stdout + filled.stderr);
    assert.ok(Number(total) <= volumeMb * MIB, `wrote ${total} bytes`);
    assert.ok(Number(total) >= (volumeMb - 1) * MIB, `wrote only ${total} bytes`);
    const image = await stat(path.join(rt.instancesDir, who.agentId, IMAGE_NAME));
    // The documented slack: ext4's metadata and reserve, at most 4.2 % + 512 KiB.
    const bound = volumeMb * MIB * 1.042 + 512 * 1024;
    assert.ok(image.size <= bound, `image of ${image.size} bytes`);
    assert.equal(image.size, volumeImageBlocks(volumeMb) * 4096);
    assert.ok(image.blocks * 512 <= image.size, `the host holds ${image.blocks * 512} bytes`);
    assert.equal(image.mode & 0o777, 0o600);
    assert.equal(image.uid, 0);
    // Nothing of the volume is in the host's mount table: the mount lives in the sandbox's namespace.
    assert.ok(!(await readFile('/proc/self/mountinfo', 'utf8')).includes(who.agentId));
  });

  test('AGT-6: the volume keeps its files across stop and start, grows with volume_mb, and a shrink below its use is refused with the reason', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap') || !requireTool(t, 'mkfs.ext4', 'e2fsprogs', ['-V'])) return;
    const who = await ids();
    const spec = (volumeMb: number) => probeSpec(rt, who, { limits: { ...SMALL_LIMITS, volumeMb } });
    await rt.driver.start(spec(8));
    await shell(rt, who.agentId, 'echo kept > /data/marker && head -c 6291456 /dev/zero > /data/six');
    await rt.driver.stop(who.agentId);
    await rt.driver.start(spec(8));
    assert.equal((await shell(rt, who.agentId, 'cat /data/marker')).stdout, 'kept\n');
    const full = await shell(rt, who.agentId, 'head -c 4194304 /dev/zero > /data/four; echo $?');
    assert.notEqual(full.stdout.trim(), '0', 'no room for 4 more MiB in 8');
    await shell(rt, who.agentId, 'rm -f /data/four');
    await rt.driver.stop(who.agentId);
    await rt.driver.start(spec(16));
    const grown = await shell(
      rt,
      who.agentId,
      'head -c 8388608 /dev/zero > /data/eight; echo $?; cat /data/marker',
    );
    assert.equal(grown.stdout, '0\nkept\n');
    await rt.driver.stop(who.agentId);
    const refused = await rt.driver.start(spec(4)).then(
      () => undefined,
      (error: Error) => error,
    );
    assert.ok(refused instanceof Error);
    assert.match(
      refused.message,
      /^the volume holds 1[45] MiB, more than volume_mb \(4\): it cannot shrink$/,
    );
    assert.equal(rt.driver.status(who.agentId).state, 'crashed');
    assert.equal(rt.driver.status(who.agentId).reason, refused.message);
    await rt.driver.start(spec(15));
    assert.equal((await shell(rt, who.agentId, 'cat /data/marker')).stdout, 'kept\n');
    await rt.driver.stop(who.agentId);
  });

  test('AGT-6: a plain volume directory of an earlier version moves into the image at the first start, files and owners kept', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap') || !requireTool(t, 'mkfs.ext4', 'e2fsprogs', ['-V'])) return;
    const who = await ids();
    const volume = path.join(rt.instancesDir, who.agentId, 'volume');
    await mkdir(path.join(volume, 'notes'), { recursive: true });
    await writeFile(path.join(volume, 'notes', 'old.txt'), 'from before\n');
    await rt.driver.start(probeSpec(rt, who));
    t.after(() => rt.driver.stop(who.agentId));
    const seen = await shell(rt, who.agentId, 'cat /data/notes/old.txt; stat -c %u /data/notes/old.txt');
    assert.equal(seen.stdout, 'from before\n1000\n');
    assert.deepEqual(await readdir(volume), [], 'the host directory is only a mount point now');
  });
});

describe('AGT-2: never host root inside', () => {
  test('AGT-2: as root, the agent runs as its own host uid, and a setuid file it leaves in /data is that uid’s, never root’s', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    assert.equal(process.getuid?.(), 0, 'this suite runs as root');
    const who = await ids();
    await rt.driver.start(probeSpec(rt, who));
    t.after(() => rt.driver.stop(who.agentId));
    const made = await shell(
      rt,
      who.agentId,
      'cp /bin/true /data/suid && chmod 4755 /data/suid && mkdir /data/dir && stat -c "%u %a" /data/suid',
    );
    assert.equal(made.stdout, '1000 4755\n', made.stderr);
    const uid = sandboxHostUid(who.agentId);
    const pid = await pidInside(who.agentId, '/data/suid');
    for (const file of ['/data/suid', '/data/dir', '/data']) {
      const onHost = await stat(`/proc/${pid}/root${file}`);
      assert.equal(onHost.uid, uid, file);
      assert.equal(onHost.gid, uid, file);
    }
    assert.equal((await stat(`/proc/${pid}/root/data/suid`)).mode & 0o7777, 0o4755);
    for (const each of await sandboxProcesses(path.join(rt.instancesDir, who.agentId))) {
      const status = await readFile(`/proc/${each}/status`, 'utf8').catch(() => '');
      if (status === '') continue;
      assert.match(status, new RegExp(`^Uid:\\t${uid}\\t${uid}\\t${uid}\\t${uid}$`, 'm'));
    }
  });
});

describe('AGT-2: the host uid needs no host path', () => {
  test('AGT-2: as root, an instance runs as its own host uid even where the data directory is mode 0700 and node lives under /root', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    await chmod(rt.dataDir, 0o700);
    t.after(() => chmod(rt.dataDir, 0o711));
    await rt.driver.start(probeSpec(rt, who));
    t.after(() => rt.driver.stop(who.agentId));
    const uid = sandboxHostUid(who.agentId);
    for (const pid of await sandboxProcesses(path.join(rt.instancesDir, who.agentId))) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      if (status !== '') assert.match(status, new RegExp(`^Uid:\\t${uid}\\t`, 'm'));
    }
    assert.equal((await shell(rt, who.agentId, 'echo ok > /data/ok && cat /data/ok')).stdout, 'ok\n');
  });
});

describe('AGT-6: limits hold without cgroups, or the instance refuses to start', () => {
  test('AGT-6: with no cpu cgroup an instance refuses to start, naming the limit and the opt-in and no host path; opted in, it starts', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    const strict = rt.driverWith(undefined, { cgroups: false });
    const refused = await strict.start(probeSpec(rt, who)).then(
      () => undefined,
      (error: Error & { code?: string }) => error,
    );
    assert.ok(refused instanceof Error);
    assert.equal(refused.code, 'instance_start_failed');
    assert.equal(
      refused.message,
      'cpu_percent cannot be enforced on this host (no cpu cgroup); the operator can let it go unenforced with ENCLAVE_UNENFORCED_LIMITS=cpu',
    );
    assert.ok(!refused.message.includes(rt.dataDir));
    assert.equal(strict.status(who.agentId).state, 'crashed');
    assert.equal(strict.status(who.agentId).reason, refused.message);
    assert.deepEqual(await sandboxProcesses(path.join(rt.instancesDir, who.agentId)), []);
    const allowed = rt.driverWith(undefined, { cgroups: false, unenforcedLimits: ['cpu'] });
    await allowed.start(probeSpec(rt, who));
    assert.equal(allowed.status(who.agentId).state, 'running');
    await allowed.stop(who.agentId);
  });

  test('AGT-6: as root with no cgroups, a bounded fork bomb stops at `processes`: RLIMIT_NPROC counts the instance’s own host uid alone', async (t) => {
    if (!requireTool(t, 'bwrap', 'bubblewrap')) return;
    const who = await ids();
    const driver = rt.driverWith(undefined, { cgroups: false, unenforcedLimits: ['cpu'] });
    const processes = 40;
    await driver.start(probeSpec(rt, who, { limits: { ...SMALL_LIMITS, processes } }));
    t.after(() => driver.stop(who.agentId));
    // The shell dies at the first fork that fails: what it printed before is the limit it saw.
    const bomb = await shell(
      rt,
      who.agentId,
      'ulimit -p; for i in $(seq 1 200); do sleep 30 </dev/null >/dev/null 2>&1 & done 2>/dev/null; echo all forked',
    );
    assert.equal(bomb.stdout, `${processes}\n`, `the bomb was not stopped: ${JSON.stringify(bomb)}`);
    let tasks = 0;
    for (const pid of await sandboxProcesses(path.join(rt.instancesDir, who.agentId))) {
      const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
      if (new RegExp(`^Uid:\\t${sandboxHostUid(who.agentId)}\\t`, 'm').test(status)) {
        tasks += Number(/^Threads:\t(\d+)$/m.exec(status)?.[1] ?? 0);
      }
    }
    assert.ok(tasks <= processes, `${tasks} tasks of the instance's uid`);
    assert.ok(tasks >= processes - 4, `the bomb filled the limit (${tasks} tasks)`);
  });
});
