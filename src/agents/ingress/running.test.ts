import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createRunningInstances } from './running.ts';

// AGT-3: the ingress routes by the agent_instances row, reused for 100 ms at
// most. The attack: a stopped or deleted agent (or one of another tenant)
// keeps answering at its subdomain because the ingress remembers it.

const TTL = 100;

/** A clock the test moves, and rows the test changes; every read is recorded and answered when the test says. */
function fixture() {
  let now = 1_000;
  const rows = new Map<string, string>();
  const reads: { subdomain: string; at: number; answer: (failed?: boolean) => Promise<void> }[] = [];
  const answerAll = async () => {
    const pending = reads.splice(0);
    for (const read of pending) await read.answer();
  };
  const running = createRunningInstances({
    read(subdomain) {
      const read = Promise.withResolvers<string | undefined>();
      // The row as it is when the test lets the read answer (the database reads it after it was sent).
      const answer = async (failed = false) => {
        if (failed) read.reject(new Error('database unavailable'));
        else read.resolve(rows.get(subdomain));
        await new Promise((resolve) => setImmediate(resolve));
      };
      reads.push({ subdomain, at: now, answer });
      return read.promise;
    },
    ttlMs: TTL,
    size: 3,
    now: () => now,
  });
  return {
    running,
    rows,
    reads,
    advance: (ms: number) => {
      now += ms;
    },
    /** Answers every read not answered yet, in the order they were sent. */
    answerAll,
    /** Makes `subdomain` a running instance's and has it looked up (and kept). */
    async known(subdomain: string, agentId: string) {
      rows.set(subdomain, agentId);
      const lookup = running.lookup(subdomain);
      await answerAll();
      assert.equal(await lookup, agentId);
    },
  };
}

test('AGT-3: a running instance’s lookup is served at most 100 ms from when it was sent, however busy its name: background lookups never stretch it', async () => {
  const { running, rows, reads, advance, answerAll, known } = fixture();
  await known('ecaaaaaaaa', 'agent-a');
  // The first half of its time: served with no read at all.
  advance(49);
  assert.equal(running.cached('ecaaaaaaaa'), 'agent-a');
  assert.equal(reads.length, 0);
  // The second half: still served, and one read goes out in the background (one only, however many requests).
  advance(1);
  assert.equal(running.cached('ecaaaaaaaa'), 'agent-a');
  assert.equal(running.cached('ecaaaaaaaa'), 'agent-a');
  assert.equal(reads.length, 1);
  // The row changes before that read is answered: the entry is still the old read's, and ends at its time.
  rows.delete('ecaaaaaaaa');
  advance(49);
  assert.equal(running.cached('ecaaaaaaaa'), 'agent-a');
  advance(1);
  assert.equal(running.cached('ecaaaaaaaa'), undefined, 'served past 100 ms from its lookup');
  // The background read answers late, with the row gone: nothing is kept.
  await answerAll();
  assert.equal(running.cached('ecaaaaaaaa'), undefined);
});

test('AGT-3: a lookup that answers late counts from when it was sent: the row it read may be that old', async () => {
  const { running, rows, reads, advance } = fixture();
  rows.set('ecffffffff', 'agent-f');
  const lookup = running.lookup('ecffffffff');
  advance(80); // the database is slow to answer
  await reads.shift()?.answer();
  assert.equal(await lookup, 'agent-f');
  assert.equal(running.cached('ecffffffff'), 'agent-f');
  advance(20);
  assert.equal(running.cached('ecffffffff'), undefined, 'served past 100 ms from its lookup being sent');
});

test('AGT-3: a background lookup that finds the instance stopped or its agent deleted drops the name at once', async () => {
  const { running, rows, advance, answerAll, known } = fixture();
  await known('ecbbbbbbbb', 'agent-b');
  advance(60);
  rows.delete('ecbbbbbbbb'); // stopped: the row no longer says running
  assert.equal(running.cached('ecbbbbbbbb'), 'agent-b'); // within its time; this use asks again
  await answerAll();
  assert.equal(running.cached('ecbbbbbbbb'), undefined);
  const again = running.lookup('ecbbbbbbbb');
  await answerAll();
  assert.equal(await again, undefined);
});

test('AGT-3: only running instances are kept: every other name asks the database on each request', async () => {
  const { running, reads, answerAll } = fixture();
  for (let i = 0; i < 3; i++) {
    const lookup = running.lookup('ecunknown0');
    assert.equal(reads.length, 1);
    await answerAll();
    assert.equal(await lookup, undefined);
    assert.equal(running.cached('ecunknown0'), undefined);
  }
});

test('AGT-3: of two lookups of a name, the one sent later decides, whichever answers first', async () => {
  const { running, rows, reads, advance } = fixture();
  rows.set('eccccccccc', 'agent-c');
  const older = running.lookup('eccccccccc');
  const olderRead = reads.shift();
  advance(10);
  rows.delete('eccccccccc');
  const newer = running.lookup('eccccccccc');
  const newerRead = reads.shift();
  assert.ok(olderRead && newerRead);
  await newerRead.answer();
  assert.equal(await newer, undefined);
  // The older read saw the row before it changed and answers last: it does not bring the name back.
  rows.set('eccccccccc', 'agent-c');
  await olderRead.answer();
  assert.equal(await older, 'agent-c');
  assert.equal(running.cached('eccccccccc'), undefined);
});

test('AGT-3: each name keeps its own instance (two tenants’ names never mix), a refused one is forgotten, and at most `size` names are kept', async () => {
  const { running, rows, reads, answerAll } = fixture();
  rows.set('ectenanta0', 'agent-of-tenant-a');
  rows.set('ectenantb0', 'agent-of-tenant-b');
  const [a, b] = [running.lookup('ectenanta0'), running.lookup('ectenantb0')];
  await answerAll();
  assert.deepEqual([await a, await b], ['agent-of-tenant-a', 'agent-of-tenant-b']);
  assert.equal(running.cached('ectenanta0'), 'agent-of-tenant-a');
  assert.equal(running.cached('ectenantb0'), 'agent-of-tenant-b');
  // Its socket refused (the instance is not up): forgotten, the next request asks again.
  running.forget('ectenanta0');
  assert.equal(running.cached('ectenanta0'), undefined);
  assert.equal(running.cached('ectenantb0'), 'agent-of-tenant-b');
  // Bounded: the oldest name makes room.
  for (const name of ['ecfill0000', 'ecfill1111', 'ecfill2222']) {
    rows.set(name, `agent-${name}`);
    const lookup = running.lookup(name);
    await answerAll();
    assert.equal(await lookup, `agent-${name}`);
  }
  assert.equal(running.cached('ectenantb0'), undefined);
  assert.equal(running.cached('ecfill2222'), 'agent-ecfill2222');
  assert.equal(reads.length, 0);
});

test('AGT-3: a background lookup that fails changes nothing: the name is served to the end of its time only, then asked for again', async () => {
  const { running, reads, advance, answerAll, known } = fixture();
  await known('ecdddddddd', 'agent-d');
  advance(70);
  assert.equal(running.cached('ecdddddddd'), 'agent-d');
  await reads.shift()?.answer(true);
  // Still within its time; this use tries again in the background, and fails again.
  assert.equal(running.cached('ecdddddddd'), 'agent-d');
  await reads.shift()?.answer(true);
  advance(30);
  assert.equal(running.cached('ecdddddddd'), undefined);
  const again = running.lookup('ecdddddddd');
  assert.equal(reads.length, 1);
  await answerAll();
  assert.equal(await again, 'agent-d');
});

test('AGT-3: a name forgotten (its socket refused) is not brought back by a lookup sent before', async () => {
  const { running, rows, reads, advance } = fixture();
  rows.set('eceeeeeeee', 'agent-e');
  const lookup = running.lookup('eceeeeeeee');
  advance(5);
  running.forget('eceeeeeeee');
  await reads.shift()?.answer();
  assert.equal(await lookup, 'agent-e');
  assert.equal(running.cached('eceeeeeeee'), undefined);
});
