import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../errors.ts';

// Write-once files (AUD-4 checkpoints, AUD-7 archive segments). The bytes go
// to a temporary file first, are flushed, and are then hard-linked to their
// name: link() never replaces an existing file, so a name, once taken, keeps
// its first content, and no reader ever sees a half-written file. Finding the
// name taken by the same content is success (a retried job); by other
// content, an error.

export type WriteOnceErrorCode = 'write_once_conflict';

export type WriteOnceResult = 'created' | 'exists';

/**
 * Creates `file` with `data` unless it exists. `same` decides whether existing
 * bytes count as the same content (default: byte for byte).
 */
export async function writeOnce(
  file: string,
  data: Uint8Array,
  options: { mode?: number; same?: (existing: Buffer) => boolean | Promise<boolean> } = {},
): Promise<WriteOnceResult> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const temporary = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temporary, 'wx', options.mode ?? 0o444);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(temporary, file);
    // The new name is durable only once its directory is flushed too.
    const directory = await open(dir, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
    return 'created';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const existing = await readFile(file);
    const same = options.same ?? ((bytes: Buffer) => bytes.equals(data));
    if (await same(existing)) return 'exists';
    throw new AppError(
      'write_once_conflict',
      `${file} already exists with other content; it is never rewritten`,
    );
  } finally {
    await unlink(temporary);
  }
}

/** The file's content, or undefined if it does not exist. */
export async function readIfExists(file: string): Promise<Buffer | undefined> {
  try {
    return await readFile(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
