import path from 'node:path';
import { readIfExists, writeOnce } from './write-once.ts';

// Where signed checkpoints are published (AUD-4). Storage is write-once: a
// checkpoint of a given size is stored once and never replaced, so a
// published checkpoint cannot be quietly swapped for another later. The
// directory publisher is the default; an S3 Object Lock bucket is another
// implementation of the same interface.

export interface CheckpointPublisher {
  /** Stores the note of tree size `size` once; 'exists' if this exact note is already there. Throws if another is. */
  publish(size: bigint, note: string): Promise<'created' | 'exists'>;
  /** The published note of `size`, or undefined if none was published. */
  read(size: bigint): Promise<string | undefined>;
  /** Where it publishes, for messages. */
  readonly location: string;
}

/** `checkpoint-<size>.note`, decimal, in the directory. */
export function checkpointFileName(size: bigint): string {
  return `checkpoint-${size}.note`;
}

export function createDirectoryPublisher(dir: string): CheckpointPublisher {
  const file = (size: bigint) => path.join(dir, checkpointFileName(size));
  return {
    location: dir,
    publish: (size, note) => writeOnce(file(size), Buffer.from(note, 'utf8')),
    async read(size) {
      return (await readIfExists(file(size)))?.toString('utf8');
    },
  };
}
