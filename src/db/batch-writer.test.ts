import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createBatchWriter } from './batch-writer.ts';

// The batch writer behind egress records and model-call rows: one write in
// flight, rows queued meanwhile go together, a failed batch is reported and
// the writer goes on, drain waits for everything added so far.

test('rows added while a write runs go into the next write together, never two writes at once', async () => {
  const writes: number[][] = [];
  let running = 0;
  let release = () => {};
  const writer = createBatchWriter<number>({
    batch: 100,
    write: async (batch) => {
      running++;
      assert.equal(running, 1, 'two writes at once');
      writes.push([...batch]);
      if (writes.length === 1) await new Promise<void>((resolve) => (release = resolve));
      running--;
    },
    lost: () => assert.fail('nothing is lost here'),
  });
  writer.add(1);
  for (let n = 2; n <= 5; n++) writer.add(n);
  assert.deepEqual(writer.pending(), [1, 2, 3, 4, 5]);
  release();
  await writer.drain();
  assert.deepEqual(writes, [[1], [2, 3, 4, 5]]);
  assert.deepEqual(writer.pending(), []);
});

test('with flushMs, lone rows wait to be written together; drain writes them at once', async () => {
  const writes: number[][] = [];
  const writer = createBatchWriter<number>({
    batch: 3,
    flushMs: 60_000,
    write: async (batch) => {
      writes.push([...batch]);
    },
    lost: () => assert.fail('nothing is lost here'),
  });
  writer.add(1);
  writer.add(2);
  assert.deepEqual(writes, [], 'held for company');
  writer.add(3); // a full batch goes at once
  await writer.drain();
  writer.add(4);
  await writer.drain();
  assert.deepEqual(writes, [[1, 2, 3], [4]]);
});

test('a batch that fails is reported with its size, and later rows are still written', async () => {
  const lost: number[] = [];
  const written: number[] = [];
  const writer = createBatchWriter<number>({
    batch: 2,
    write: async (batch) => {
      if (batch.includes(1)) throw new Error('database down');
      written.push(...batch);
    },
    lost: (count) => lost.push(count),
  });
  writer.add(1);
  await writer.drain();
  writer.add(2);
  await writer.drain();
  assert.deepEqual(lost, [1]);
  assert.deepEqual(written, [2]);
});
