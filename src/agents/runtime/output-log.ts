import { constants } from 'node:fs';
import { type FileHandle, open, rename } from 'node:fs/promises';
import { Writable } from 'node:stream';

// An instance's output (its stdout and stderr, and the supervisor's
// `[enclave]` lines) in `<instance dir>/output.log`, capped: past maxBytes the
// file becomes output.log.1 (replacing the previous one) and a new one
// starts, so an instance keeps at most twice the cap. Writes are a stream
// with backpressure: an agent that prints faster than the disk takes it
// waits on its pipe instead of filling the driver's memory.

export const OUTPUT_LOG_MAX_BYTES = 1024 * 1024;

// The log lives in the instance directory, which no sandbox can reach; a link there is followed never all the same.
const APPEND = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW;
const READ = constants.O_RDONLY | constants.O_NOFOLLOW;

async function readNoFollow(file: string): Promise<Buffer> {
  const handle = await open(file, READ).catch(() => undefined);
  if (handle === undefined) return Buffer.alloc(0);
  try {
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

export interface OutputLog extends Writable {
  /** Appends a line of the driver's own (`[enclave] …`). */
  note(line: string): void;
}

export function createOutputLog(file: string, maxBytes = OUTPUT_LOG_MAX_BYTES): OutputLog {
  let handle: FileHandle | undefined;
  let size = 0;

  const ensureOpen = async (): Promise<FileHandle> => {
    if (handle !== undefined) return handle;
    handle = await open(file, APPEND, 0o600);
    size = (await handle.stat()).size;
    return handle;
  };

  const append = async (chunk: Buffer): Promise<void> => {
    let current = await ensureOpen();
    if (size > 0 && size + chunk.length > maxBytes) {
      await current.close();
      handle = undefined;
      await rename(file, `${file}.1`);
      current = await ensureOpen();
    }
    await current.write(chunk);
    size += chunk.length;
  };

  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      append(chunk).then(() => callback(), callback);
    },
    final(callback) {
      const current = handle;
      handle = undefined;
      if (current === undefined) callback();
      else current.close().then(() => callback(), callback);
    },
  }) as OutputLog;
  stream.note = (line: string) => {
    if (!stream.writableEnded) stream.write(Buffer.from(`[enclave] ${line}\n`));
  };
  // A full disk must not take the driver down: the instance runs on without its log.
  stream.on('error', () => undefined);
  return stream;
}

/** The last `lines` lines of the log (the rotated file first), oldest first. */
export async function tailLines(file: string, lines: number): Promise<string[]> {
  if (!Number.isInteger(lines) || lines <= 0) return [];
  const [older, newer] = await Promise.all([readNoFollow(`${file}.1`), readNoFollow(file)]);
  const text = Buffer.concat([older, newer]).toString('utf8');
  const all = text.split('\n');
  if (all.at(-1) === '') all.pop();
  return all.slice(-lines);
}
