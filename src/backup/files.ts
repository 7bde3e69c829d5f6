import type { Dirent } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Part } from './container.ts';

// The two directories a backup carries besides the database (OPS-4): the
// published checkpoints and the audit archive. Both are write-once stores,
// so their files come back read-only, as writeOnce() leaves them. Half-written
// temporaries (".name.xxxx.tmp") are not part of either store.

export const DIRECTORY_PARTS = { checkpoints: 'checkpoints/', archive: 'audit-archive/' } as const;

export interface BackupDirectories {
  readonly checkpointDir: string;
  readonly auditArchiveDir: string;
}

function prefixes(dirs: BackupDirectories): [string, string][] {
  return [
    [DIRECTORY_PARTS.checkpoints, dirs.checkpointDir],
    [DIRECTORY_PARTS.archive, dirs.auditArchiveDir],
  ];
}

async function listFiles(dir: string): Promise<string[]> {
  let entries: Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true, encoding: 'utf8' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  return entries
    .filter((entry) => entry.isFile() && !(entry.name.startsWith('.') && entry.name.endsWith('.tmp')))
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort();
}

export async function readDirectoryParts(dirs: BackupDirectories): Promise<Part[]> {
  const parts: Part[] = [];
  for (const [prefix, dir] of prefixes(dirs)) {
    for (const file of await listFiles(dir)) {
      parts.push({
        name: `${prefix}${file.split(path.sep).join('/')}`,
        data: await readFile(path.join(dir, file)),
      });
    }
  }
  return parts;
}

/** Directories that hold files already: a restore must not mix a backup into them. */
export async function nonEmptyDirectories(dirs: BackupDirectories): Promise<string[]> {
  const found: string[] = [];
  for (const [, dir] of prefixes(dirs)) if ((await listFiles(dir)).length > 0) found.push(dir);
  return found;
}

/** A part's path under its directory, refusing any name that would leave it. */
export function partTarget(name: string, dirs: BackupDirectories): string | undefined {
  for (const [prefix, dir] of prefixes(dirs)) {
    if (!name.startsWith(prefix)) continue;
    const relative = name.slice(prefix.length);
    const segments = relative.split('/');
    if (
      segments.some(
        (segment) => segment === '' || segment === '.' || segment === '..' || segment.includes('\0'),
      )
    ) {
      return undefined;
    }
    return path.join(dir, ...segments);
  }
  return undefined;
}

/**
 * Writes the directory parts, never over an existing path. Each file's path
 * goes into `written` once it is written, so a restore that fails part-way
 * removes what it wrote and nothing else.
 */
export async function writeDirectoryParts(
  parts: readonly Part[],
  dirs: BackupDirectories,
  written: string[],
): Promise<number> {
  const before = written.length;
  for (const part of parts) {
    const file = partTarget(part.name, dirs);
    if (file === undefined) continue;
    await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
    await writeFile(file, part.data, { mode: 0o444, flag: 'wx' });
    written.push(file);
  }
  return written.length - before;
}
