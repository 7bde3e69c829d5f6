import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { requireTool } from '../../../test/helpers/system-tools.ts';
import { findExecutable } from './sandbox-host.ts';
import { cleanImageBlocks, limitReserveBlocks, volumeImageBlocks } from './volume-image.ts';

// The volume image's size (AGT-6): large enough that exactly volume_mb stays
// writable beside ext4's metadata and reserve, and no larger than the
// documented slack, measured with the real mkfs.ext4 on sparse files.

let scratch: string;

before(async () => {
  scratch = await mkdtemp(path.join(tmpdir(), 'enclave-volume-'));
});
after(() => rm(scratch, { recursive: true, force: true }));

describe('the volume image size', () => {
  test('AGT-6: from 1 MiB to 500 GiB, the image holds volume_mb for the instance and at most 4.1 % + 280 KiB (2.1 % + 16 MiB past 10 GiB) more', async (t) => {
    if (!requireTool(t, 'mkfs.ext4', 'e2fsprogs', ['-V'])) return;
    const mkfs = await findExecutable('mkfs.ext4');
    const dumpe2fs = await findExecutable('dumpe2fs');
    assert.ok(mkfs !== undefined && dumpe2fs !== undefined);
    // 8000 MiB is where ext4's reserved descriptor blocks once outgrew the sizing.
    for (const volumeMb of [1, 2, 3, 50, 500, 1024, 8000, 10240, 30000, 512000]) {
      const blocks = volumeImageBlocks(volumeMb);
      const reserve = await limitReserveBlocks({ mkfs, dumpe2fs }, scratch, blocks, volumeMb);
      assert.ok(reserve >= 0, `${volumeMb} MiB: ${reserve} blocks short`);
      const slack = blocks * 4096 - volumeMb * 1024 * 1024;
      const bound =
        volumeMb <= 10240
          ? volumeMb * 1024 * 1024 * 0.041 + 280 * 1024
          : volumeMb * 1024 * 1024 * 0.021 + 16 * 1024 * 1024;
      assert.ok(slack <= bound, `${volumeMb} MiB: ${slack} bytes of slack`);
    }
  });
});

describe('a warm start of a volume image', () => {
  test('AGT-6: an image skips e2fsck only while its superblock says cleanly unmounted: one left mounted or with errors is checked', async (t) => {
    if (!requireTool(t, 'mkfs.ext4', 'e2fsprogs', ['-V'])) return;
    const image = path.join(scratch, 'warm.ext4');
    await (await open(image, 'w')).close();
    await truncate(image, 4 * 1024 * 1024);
    execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-O', '^has_journal,^resize_inode', image]);
    assert.equal(await cleanImageBlocks(image), 1024);
    // s_state at superblock offset 0x3a: 0 while the kernel has it mounted, 2 (errors) after a failure.
    for (const state of [0, 2, 3]) {
      const handle = await open(image, 'r+');
      await handle.write(Buffer.from([state, 0]), 0, 2, 1024 + 0x3a);
      await handle.close();
      assert.equal(await cleanImageBlocks(image), undefined, `state ${state}`);
    }
    assert.equal(await cleanImageBlocks(path.join(scratch, 'missing.ext4')), undefined);
  });
});
