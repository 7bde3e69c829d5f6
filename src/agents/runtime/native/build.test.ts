import assert from 'node:assert/strict';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  rm,
  symlink,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool } from '../../../../test/helpers/system-tools.ts';
import { findExecutable } from '../sandbox-host.ts';
import { buildNative } from './build.ts';

// The native launcher and starter are built on the host, once per source,
// into a directory of the driver's own; a host that cannot build them
// starts instances without them (start-paths.test.ts shows both ways).

let scratch: string;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'enclave-native-'));
});
after(() => rm(scratch, { recursive: true, force: true }));

describe('building the native helpers', () => {
  test('both are built, executable and writable by no one else, named by their sources’ hash; a second driver finds them built, unless they no longer run', async (t) => {
    if (!requireTool(t, 'cc', 'gcc')) return;
    const dir = path.join(scratch, 'built');
    const built = await buildNative(dir, await findExecutable('cc'));
    assert.ok(built.ok, built.ok ? '' : built.reason);
    assert.match(path.basename(built.launcher), /^enclave-launch-[0-9a-f]{16}$/);
    assert.match(path.basename(built.starter), /^enclave-starter-[0-9a-f]{16}$/);
    for (const binary of [built.launcher, built.starter]) {
      const stat = await lstat(binary);
      assert.ok(stat.isFile());
      assert.equal(stat.mode & 0o777, 0o755);
    }
    const before = await lstat(built.starter);
    // A compiler that would fail proves nothing is built again.
    const again = await buildNative(dir, '/bin/false');
    assert.deepEqual(again, built);
    assert.equal((await lstat(built.starter)).mtimeMs, before.mtimeMs);
    assert.deepEqual(
      (await readdir(dir)).sort(),
      [built.launcher, built.starter].map((file) => path.basename(file)).sort(),
    );
    // One a crash left empty does not run: it is built again, never used.
    await truncate(built.starter, 0);
    const broken = await buildNative(dir, '/bin/false');
    assert.equal(broken.ok, false);
    assert.deepEqual(await buildNative(dir, await findExecutable('cc')), built);
    assert.ok((await lstat(built.starter)).size > 0);
  });

  test('without a compiler, or where it fails, there are none, with the reason, and nothing half-built is left', async () => {
    // What a build killed long ago left behind goes; one under way (recent) stays.
    const dir = path.join(scratch, 'failing');
    await mkdir(dir, { mode: 0o755 });
    const stale = path.join(dir, 'enclave-starter-0123456789abcdef.a1b2c3.tmp');
    const recent = path.join(dir, 'enclave-launch-0123456789abcdef.d4e5f6.tmp');
    await writeFile(stale, 'half');
    await writeFile(recent, 'half');
    const old = new Date(Date.now() - 3_600_000);
    await utimes(stale, old, old);
    assert.deepEqual(await buildNative(path.join(scratch, 'none'), undefined), {
      ok: false,
      reason: 'no C compiler (cc) on this host',
    });
    const failed = await buildNative(dir, '/bin/false');
    assert.equal(failed.ok, false);
    assert.match(failed.ok ? '' : failed.reason, /^enclave-(launch|starter) did not build$/);
    assert.deepEqual(await readdir(dir), [path.basename(recent)]);
  });

  test('a build directory that is a link, or that others may write, is refused', async () => {
    const real = path.join(scratch, 'real');
    await mkdir(real);
    const link = path.join(scratch, 'link');
    await symlink(real, link);
    const cc = '/bin/false';
    assert.deepEqual(await buildNative(link, cc), {
      ok: false,
      reason: 'their build directory is not the driver’s own',
    });
    const open = path.join(scratch, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    assert.deepEqual(await buildNative(open, cc), {
      ok: false,
      reason: 'their build directory is not the driver’s own',
    });
  });
});
