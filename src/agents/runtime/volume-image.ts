import { execFile } from 'node:child_process';
import { chmod, chown, lstat, mkdir, mkdtemp, open, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../../errors.ts';
import { chownTree, emptyDir } from './sandbox-process.ts';

// AGT-6, the volume as a hard limit: each instance's /data is an ext4 file
// system in a sparse image file (`<instance>/volume.ext4`, root, 0600), loop
// mounted by the launcher inside its own private mount namespace (so the
// mount disappears with the sandbox, kill -9 included, and nothing else on
// the host ever sees it). A write past volume_mb fails inside with ENOSPC:
// blocks beyond the limit are ext4's root-reserved blocks, which the
// instance's unprivileged host uid cannot use. The host holds at most the
// image: volume_mb plus ext4's metadata (inode tables, one inode per 16 KiB:
// about 1.6 %) and its reserve for extent conversion (2 %, at most 16 MiB):
// at most 4.1 % + 280 KiB. Loop mounts need root, so only a root worker has this;
// elsewhere the volume is measured (usage-watch.ts) only if the operator
// allows it (docs/runtime.md, Limits).

export type VolumeErrorCode = 'volume_over_limit' | 'volume_damaged' | 'volume_failed';

/** Messages reach the agent's page: they name no host path. */
export class VolumeError extends AppError<VolumeErrorCode> {
  constructor(code: VolumeErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'VolumeError';
  }
}

const BLOCK = 4096;
const MIB_BLOCKS = (1024 * 1024) / BLOCK;
/** ext4 keeps min(2 %, 4096 clusters) back for converting unwritten extents; no user can write them. */
const resvBlocks = (blocks: number) => Math.min(Math.floor(blocks / 50), 4096);

/** The image's size in 4 KiB blocks for a limit: room for volume_mb after metadata and ext4's reserve. */
export function volumeImageBlocks(volumeMb: number): number {
  const wanted = volumeMb * MIB_BLOCKS;
  const base = wanted + Math.ceil(wanted / 50) + 64;
  return base + Math.min(Math.ceil(base / 49) + 1, 4096);
}

export const IMAGE_NAME = 'volume.ext4';

export interface VolumeTools {
  readonly mkfs: string;
  readonly e2fsck: string;
  readonly resize2fs: string;
  readonly tune2fs: string;
  readonly dumpe2fs: string;
}

export type VolumeSupport =
  | { readonly images: true; readonly tools: VolumeTools }
  | { readonly images: false; readonly reason: string };

function run(command: string, args: readonly string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const options = { timeout: 120_000, maxBuffer: 1 << 20, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' } };
    execFile(command, args, options, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

function mkfsArgs(uid: number, image: string, source: string | undefined): string[] {
  return [
    '-q',
    '-F',
    '-t',
    'ext4',
    '-b',
    String(BLOCK),
    '-i',
    '16384',
    '-m',
    '0',
    // No journal: the image is checked (e2fsck -p) before every mount. No
    // resize inode: its reserved descriptor blocks (measured: 9000 blocks at
    // 8 GB) would break the sizing; resize2fs grows offline without it.
    '-O',
    '^has_journal,^resize_inode',
    '-E',
    `root_owner=${uid}:${uid}`,
    '-L',
    'enclave-volume',
    ...(source === undefined ? [] : ['-d', source]),
    image,
  ];
}

/** A sparse file of `blocks` blocks, root's alone. */
async function sparseFile(file: string, blocks: number): Promise<void> {
  const handle = await open(file, 'w', 0o600);
  try {
    await handle.truncate(blocks * BLOCK);
  } finally {
    await handle.close();
  }
}

async function resize(file: string, blocks: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    await handle.truncate(blocks * BLOCK);
  } finally {
    await handle.close();
  }
}

async function header(
  tools: Pick<VolumeTools, 'dumpe2fs'>,
  image: string,
): Promise<{ blocks: number; free: number }> {
  const result = await run(tools.dumpe2fs, ['-h', image]);
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)$`, 'm').exec(result.output)?.[1]);
  const blocks = field('Block count');
  const free = field('Free blocks');
  if (result.code !== 0 || !Number.isInteger(blocks) || !Number.isInteger(free)) {
    throw new VolumeError('volume_damaged', "the volume's file system cannot be read");
  }
  return { blocks, free };
}

/** Free blocks of a fresh file system of `blocks` blocks: what the image's metadata leaves. */
async function freshFreeBlocks(
  tools: Pick<VolumeTools, 'mkfs' | 'dumpe2fs'>,
  dir: string,
  blocks: number,
): Promise<number> {
  const scratch = await mkdtemp(path.join(dir, '.measure-'));
  try {
    const image = path.join(scratch, 'image');
    await sparseFile(image, blocks);
    const made = await run(tools.mkfs, mkfsArgs(0, image, undefined));
    if (made.code !== 0) throw new VolumeError('volume_failed', 'the volume could not be made');
    return (await header(tools, image)).free;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * The blocks to reserve for root in an image of `blocks` blocks so that
 * exactly volume_mb stays writable for anyone else; negative if the image is
 * too small for the limit.
 */
export async function limitReserveBlocks(
  tools: Pick<VolumeTools, 'mkfs' | 'dumpe2fs'>,
  scratchDir: string,
  blocks: number,
  volumeMb: number,
): Promise<number> {
  return (await freshFreeBlocks(tools, scratchDir, blocks)) - resvBlocks(blocks) - volumeMb * MIB_BLOCKS;
}

/** Root-reserves every free block beyond volume_mb: the instance's uid gets exactly its limit. */
async function reserveBeyondLimit(
  tools: VolumeTools,
  dir: string,
  image: string,
  volumeMb: number,
): Promise<void> {
  const { blocks } = await header(tools, image);
  const reserve = await limitReserveBlocks(tools, dir, blocks, volumeMb);
  if (reserve < 0) throw new VolumeError('volume_failed', 'the volume could not be sized');
  const tuned = await run(tools.tune2fs, ['-r', String(reserve), image]);
  if (tuned.code !== 0) throw new VolumeError('volume_failed', 'the volume could not be sized');
}

/**
 * The block count of an image whose superblock says e2fsck -p would find
 * nothing to do: ext4's magic, state exactly "cleanly unmounted" (no error,
 * no orphan), no orphan list, and no mount-count or interval check due.
 * Without a journal the kernel clears that state while the volume is mounted
 * and sets it again only on a clean unmount, so a volume a crash left behind
 * is never taken as clean. undefined: let dumpe2fs and e2fsck decide.
 */
export async function cleanImageBlocks(image: string): Promise<number | undefined> {
  const superblock = Buffer.alloc(1024);
  const handle = await open(image, 'r').catch(() => undefined);
  if (handle === undefined) return undefined;
  try {
    const { bytesRead } = await handle.read(superblock, 0, 1024, 1024);
    if (bytesRead !== 1024) return undefined;
  } finally {
    await handle.close();
  }
  const EXT4_MAGIC = 0xef53;
  const VALID_FS = 1;
  const INCOMPAT_64BIT = 0x80;
  if (superblock.readUInt16LE(0x38) !== EXT4_MAGIC || superblock.readUInt16LE(0x3a) !== VALID_FS)
    return undefined;
  if (superblock.readUInt32LE(0xe8) !== 0) return undefined; // s_last_orphan
  const mounts = superblock.readUInt16LE(0x34);
  const maxMounts = superblock.readInt16LE(0x36);
  if (maxMounts > 0 && mounts >= maxMounts) return undefined;
  if (superblock.readUInt32LE(0x44) !== 0) return undefined; // s_checkinterval: a time-based check
  const high = (superblock.readUInt32LE(0x60) & INCOMPAT_64BIT) !== 0 ? superblock.readUInt32LE(0x150) : 0;
  return high * 2 ** 32 + superblock.readUInt32LE(0x4);
}

async function check(tools: VolumeTools, image: string, force: boolean): Promise<void> {
  const checked = await run(tools.e2fsck, [force ? '-fp' : '-p', image]);
  // 0: clean, 1: errors corrected; 4 and above: an operator must look.
  if (checked.code !== 0 && checked.code !== 1) {
    throw new VolumeError(
      'volume_damaged',
      "the volume's file system has errors that need an operator (e2fsck)",
    );
  }
}

/** Bytes a directory tree holds (allocated blocks, symlinks not followed), counting at most `maxEntries` entries. */
export async function volumeUsageBytes(dir: string, maxEntries = 1_000_000): Promise<number> {
  let total = 0;
  let entries = 0;
  const pending = [dir];
  while (pending.length > 0 && entries < maxEntries) {
    const current = pending.pop() as string;
    const names = await readdir(current).catch(() => [] as string[]);
    for (const name of names) {
      entries++;
      const file = path.join(current, name);
      const stat = await lstat(file).catch(() => undefined);
      if (stat === undefined) continue;
      total += stat.blocks * 512;
      if (stat.isDirectory()) pending.push(file);
    }
  }
  return total;
}

const mib = (blocks: number) => Math.ceil(blocks / MIB_BLOCKS);

/**
 * Makes `<dir>/volume.ext4` ready for a mount at `<dir>/volume`: created at
 * the first start (from what a plain volume directory of an earlier version
 * holds, owners kept), checked, and grown or shrunk to volume_mb. A shrink
 * below what the volume holds is refused. Runs only while no sandbox of the
 * instance exists. Returns the image's path.
 */
export async function prepareVolumeImage(
  tools: VolumeTools,
  dir: string,
  volumeMb: number,
  uid: number,
): Promise<string> {
  const image = path.join(dir, IMAGE_NAME);
  const volumeDir = path.join(dir, 'volume');
  const blocks = volumeImageBlocks(volumeMb);
  await mkdir(volumeDir, { recursive: true, mode: 0o700 });
  // What a worker that died mid-way left: a half-made image, scratch file systems.
  for (const name of await readdir(dir)) {
    if (name.startsWith('.measure-') || name === `${IMAGE_NAME}.new`) {
      await rm(path.join(dir, name), { recursive: true, force: true });
    }
  }
  const existing = await lstat(image).catch(() => undefined);
  if (existing === undefined) {
    const held = await volumeUsageBytes(volumeDir);
    if (held > volumeMb * 1024 * 1024) {
      throw new VolumeError(
        'volume_over_limit',
        `the volume holds ${mib(held / BLOCK)} MiB, more than volume_mb (${volumeMb}): raise the limit to move it`,
      );
    }
    const migrating = (await readdir(volumeDir)).length > 0;
    if (migrating) await chownTree(volumeDir, uid);
    const fresh = `${image}.new`;
    await sparseFile(fresh, blocks);
    const made = await run(tools.mkfs, mkfsArgs(uid, fresh, migrating ? volumeDir : undefined));
    if (made.code !== 0) {
      await rm(fresh, { force: true });
      throw new VolumeError('volume_failed', 'the volume could not be made');
    }
    await reserveBeyondLimit(tools, dir, fresh, volumeMb);
    await rename(fresh, image);
  } else if (!existing.isFile()) {
    throw new VolumeError('volume_damaged', 'the volume image is not a file');
  } else if ((await cleanImageBlocks(image)) !== blocks) {
    // Not clean, or of another size: checked, then grown or shrunk. A clean one of the right size
    // is what e2fsck -p would pass untouched: two processes fewer for every warm start.
    const current = (await header(tools, image)).blocks;
    await check(tools, image, current !== blocks);
    if (current !== blocks) {
      const used = (await freshFreeBlocks(tools, dir, current)) - (await header(tools, image)).free;
      if (used > volumeMb * MIB_BLOCKS) {
        throw new VolumeError(
          'volume_over_limit',
          `the volume holds ${mib(used)} MiB, more than volume_mb (${volumeMb}): it cannot shrink`,
        );
      }
      if (blocks > current) await resize(image, blocks);
      const resized = await run(tools.resize2fs, [image, `${blocks * (BLOCK / 1024)}K`]);
      if (resized.code !== 0) throw new VolumeError('volume_failed', 'the volume could not be resized');
      if (blocks < current) await resize(image, blocks);
      await reserveBeyondLimit(tools, dir, image, volumeMb);
    }
  }
  // The directory is only a mount point now: what a migration left there is in the image.
  await emptyDir(volumeDir);
  await chown(volumeDir, 0, 0);
  await chmod(volumeDir, 0o700);
  return image;
}

/**
 * Whether this host can give volumes a hard limit: root, e2fsprogs, and a
 * loop mount that works (measured: a container may have no loop devices).
 */
export async function detectVolumeImages(
  scratchDir: string,
  tools: {
    readonly unshare: string | undefined;
    readonly find: (name: string) => Promise<string | undefined>;
  },
): Promise<VolumeSupport> {
  if (process.getuid?.() !== 0) {
    return { images: false, reason: 'loop-mounted volume images need a worker running as root' };
  }
  const [mkfs, e2fsck, resize2fs, tune2fs, dumpe2fs] = await Promise.all(
    ['mkfs.ext4', 'e2fsck', 'resize2fs', 'tune2fs', 'dumpe2fs'].map(tools.find),
  );
  if (
    mkfs === undefined ||
    e2fsck === undefined ||
    resize2fs === undefined ||
    tune2fs === undefined ||
    dumpe2fs === undefined
  ) {
    return { images: false, reason: 'e2fsprogs (mkfs.ext4, e2fsck, resize2fs) is not installed' };
  }
  if (tools.unshare === undefined) return { images: false, reason: 'unshare (util-linux) is not installed' };
  const found: VolumeTools = { mkfs, e2fsck, resize2fs, tune2fs, dumpe2fs };
  let scratch: string | undefined;
  try {
    await mkdir(scratchDir, { recursive: true });
    scratch = await mkdtemp(path.join(scratchDir, '.probe-volume-'));
    const image = path.join(scratch, 'image');
    const mountPoint = path.join(scratch, 'mnt');
    await mkdir(mountPoint);
    await sparseFile(image, 256);
    if ((await run(mkfs, mkfsArgs(0, image, undefined))).code !== 0) {
      return { images: false, reason: 'mkfs.ext4 cannot make a volume image' };
    }
    const mounted = await run(tools.unshare, [
      '--mount',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      '-c',
      'mount -t ext4 -o loop,nosuid,nodev "$1" "$2"',
      'enclave-probe',
      image,
      mountPoint,
    ]);
    if (mounted.code !== 0) {
      return { images: false, reason: 'a loop mount fails here (no loop devices?)' };
    }
    return { images: true, tools: found };
  } catch {
    return { images: false, reason: 'a volume image could not be probed' };
  } finally {
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  }
}
