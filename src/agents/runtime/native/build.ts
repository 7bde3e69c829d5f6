import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { runTool } from '../run-tool.ts';

// The native helpers of a start: the launcher (launcher.c: the host's
// side, instead of the prlimit, unshare, shell, mount and setpriv chain) and
// the starter (starter.c: the sandbox's first process, which starts the
// agent beside the supervisor). They are built on the host the first time a
// driver needs them, with the host's C compiler, into a directory of the
// driver's own; each name carries its source's hash, so a changed source is
// built again and a stale binary never runs. A host without a compiler (or
// where a build fails) starts instances the slower way, with neither, and
// the operator's log says why.

const SOURCES = {
  launcher: path.join(import.meta.dirname, 'launcher.c'),
  starter: path.join(import.meta.dirname, 'starter.c'),
};
const FLAGS = ['-std=gnu11', '-O2', '-Wall', '-Wextra'];
const BUILD_TIMEOUT_MS = 60_000;

export type NativeBuild =
  | { readonly ok: true; readonly launcher: string; readonly starter: string }
  | { readonly ok: false; readonly reason: string };

/** The binary runs on this host and is the one built (an empty file would run as an empty script). */
async function runs(binary: string): Promise<boolean> {
  const result = await runTool(binary, ['--check'], BUILD_TIMEOUT_MS);
  return result.code === 0 && result.output === 'enclave-native\n';
}

/** A build killed mid-way leaves its temporary file: one older than any build could be is removed. */
async function removeStale(dir: string): Promise<void> {
  for (const name of await readdir(dir)) {
    if (!name.endsWith('.tmp')) continue;
    const file = path.join(dir, name);
    const stat = await lstat(file).catch(() => undefined);
    if (stat !== undefined && Date.now() - stat.mtimeMs > 2 * BUILD_TIMEOUT_MS)
      await rm(file, { force: true });
  }
}

/** The directory is the driver's alone: not a link, its owner's, writable by no one else. */
async function ownDirectory(dir: string): Promise<boolean> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const stat = await lstat(dir);
  return stat.isDirectory() && stat.uid === (process.getuid?.() ?? 0) && (stat.mode & 0o022) === 0;
}

type Built = { readonly ok: true; readonly binary: string } | { readonly ok: false; readonly reason: string };

async function buildOne(dir: string, cc: string, name: string, sourceFile: string): Promise<Built> {
  const source = await readFile(sourceFile);
  const hash = createHash('sha256').update(FLAGS.join(' ')).update('\0').update(source).digest('hex');
  const binary = path.join(dir, `${name}-${hash.slice(0, 16)}`);
  // One built before is used while it runs here (a crash may have left it empty, the directory may be noexec).
  const built = await lstat(binary).catch(() => undefined);
  const own =
    built?.isFile() === true && built.uid === (process.getuid?.() ?? 0) && (built.mode & 0o022) === 0;
  if (own && (await runs(binary))) return { ok: true, binary };
  // Built under a name of its own, then renamed: drivers of one host may build at once.
  const temporary = `${binary}.${randomBytes(6).toString('hex')}.tmp`;
  const result = await runTool(cc, [...FLAGS, '-o', temporary, sourceFile], BUILD_TIMEOUT_MS);
  if (result.code !== 0) {
    await rm(temporary, { force: true });
    const detail = result.output.trim().split('\n').at(-1) ?? '';
    return { ok: false, reason: `${name} did not build${detail === '' ? '' : `: ${detail.slice(0, 200)}`}` };
  }
  await chmod(temporary, 0o755);
  const file = await open(temporary, 'r');
  await file.sync().finally(() => file.close());
  if (!(await runs(temporary))) {
    await rm(temporary, { force: true });
    return { ok: false, reason: `${name} was built but does not run here (a directory mounted noexec?)` };
  }
  await rename(temporary, binary);
  return { ok: true, binary };
}

/** Builds both helpers into `dir` (or finds them built there), with `cc`; never throws. */
export async function buildNative(dir: string, cc: string | undefined): Promise<NativeBuild> {
  if (cc === undefined) return { ok: false, reason: 'no C compiler (cc) on this host' };
  try {
    if (!(await ownDirectory(dir)))
      return { ok: false, reason: 'their build directory is not the driver’s own' };
    await removeStale(dir);
    const [launcher, starter] = await Promise.all([
      buildOne(dir, cc, 'enclave-launch', SOURCES.launcher),
      buildOne(dir, cc, 'enclave-starter', SOURCES.starter),
    ]);
    if (!launcher.ok) return launcher;
    if (!starter.ok) return starter;
    return { ok: true, launcher: launcher.binary, starter: starter.binary };
  } catch (error) {
    return {
      ok: false,
      reason: `the build failed: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
    };
  }
}
