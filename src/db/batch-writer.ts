// Rows that a busy path produces one at a time (egress connections, model
// calls) and the database takes in batches: at most one write in flight per
// writer, with whatever queued meanwhile going into the next one, so a fast
// producer costs the database batches, not a transaction per row. With
// `flushMs`, a lone row also waits that long for company before it is
// written. A batch that fails is reported to `lost` (never retried: the
// caller's log line says how many rows went) and the writer goes on.

export interface BatchWriter<T> {
  add(row: T): void;
  /** Rows added and not yet written (queued or in the write now running). */
  pending(): readonly T[];
  /** Writes what is queued now and resolves once every row added so far is written (or lost). */
  drain(): Promise<void>;
}

export interface BatchWriterOptions<T> {
  readonly write: (batch: readonly T[]) => Promise<void>;
  readonly lost: (count: number, error: unknown) => void;
  /** Rows per write at most. */
  readonly batch: number;
  /** How long a row may wait for others before it is written; 0: at once. */
  readonly flushMs?: number;
}

export function createBatchWriter<T>(options: BatchWriterOptions<T>): BatchWriter<T> {
  const queue: T[] = [];
  let inFlight: readonly T[] = [];
  let writing: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;

  async function writeAll(): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, options.batch);
      inFlight = batch;
      try {
        await options.write(batch);
      } catch (error) {
        options.lost(batch.length, error);
      } finally {
        inFlight = [];
      }
    }
  }

  function startWriting(): void {
    if (writing !== undefined || queue.length === 0) return;
    writing = writeAll().finally(() => {
      writing = undefined;
      startWriting(); // a row queued after the loop's last check
    });
  }

  return {
    add(row) {
      queue.push(row);
      if (!options.flushMs || queue.length >= options.batch) {
        startWriting();
        return;
      }
      timer ??= setTimeout(() => {
        timer = undefined;
        startWriting();
      }, options.flushMs);
    },
    pending: () => [...inFlight, ...queue],
    async drain() {
      clearTimeout(timer);
      timer = undefined;
      startWriting();
      while (writing !== undefined) await writing;
    },
  };
}

/** What a lost batch's log line says of its error: code and message, which name no row. */
export function errorFields(error: unknown): { code: unknown; message: string } {
  return { code: (error as { code?: unknown }).code, message: (error as Error).message };
}
