import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { appendEvents, createTenant, useAuditDatabase } from '../../test/helpers/audit.ts';
import { createCheckpointService, latestTenantLeaf, type MadeCheckpoint } from './checkpoint-log.ts';
import { type Checkpointer, startCheckpointer } from './checkpointer.ts';

// AUD-4, AUD-8: a checkpoint follows every head move within
// ENCLAVE_CHECKPOINT_DELAY seconds, without anyone asking, so events can be
// dropped or forged undetected for seconds, not an hour. Tests wait for the
// checkpointer's own events, never for a time.

const audit = useAuditDatabase();

/** A running checkpointer whose runs and polls can be awaited. */
function watched(delaySeconds: number) {
  const service = createCheckpointService({
    sql: audit.db.app,
    signing: audit.setup.signing,
    publisher: audit.setup.publisher,
    logger: { info: () => {}, error: () => {} },
  });
  const runs: MadeCheckpoint[] = [];
  let polls = 0;
  const waiters: (() => void)[] = [];
  const wake = () => {
    for (const waiter of waiters.splice(0)) waiter();
  };
  const checkpointer: Checkpointer = startCheckpointer({
    sql: audit.db.app,
    checkpoints: service,
    delaySeconds,
    logger: { warn: () => {} },
    onRun: (made) => {
      runs.push(made);
      wake();
    },
    onPoll: () => {
      polls++;
      wake();
    },
  });
  /** Resolves once `done()` holds, checked after each run and poll. */
  const until = async (done: () => boolean): Promise<void> => {
    while (!done()) await new Promise<void>((resolve) => waiters.push(resolve));
  };
  return { checkpointer, runs, polls: () => polls, until };
}

describe('the checkpointer', () => {
  test('AUD-4, AUD-8: a head that moves is committed to by a signed, published checkpoint, with no one asking', async () => {
    const tenant = await createTenant(audit.db);
    const { checkpointer, runs, until } = watched(1);
    try {
      await appendEvents(audit.db, tenant, 2);
      await until(() => runs.some((run) => run.created && run.leavesAppended > 0));
      const made = runs.find((run) => run.created);
      assert.ok(made !== undefined);
      const leaf = await latestTenantLeaf(audit.db.app, tenant, made.checkpoint.size);
      assert.equal(leaf?.seq, 2);
      assert.equal(await audit.setup.publisher.read(made.checkpoint.size), made.checkpoint.note);
    } finally {
      await checkpointer.stop();
    }
  });

  test('AUD-4: with nothing appended, polls sign nothing; appends within the delay are batched into one checkpoint', async () => {
    const [one, two] = [await createTenant(audit.db), await createTenant(audit.db)];
    const { checkpointer, runs, polls, until } = watched(2);
    try {
      // The first poll runs once (catching up); after it, polls with no appends run nothing.
      await until(() => runs.length === 1);
      const afterFirst = polls();
      await until(() => polls() >= afterFirst + 3);
      assert.equal(runs.length, 1, 'a checkpoint ran with nothing appended');
      await appendEvents(audit.db, one, 1);
      await appendEvents(audit.db, two, 1);
      await until(() => runs.some((run) => run.created));
      const batch = runs.filter((run) => run.created);
      assert.equal(batch.length, 1);
      assert.equal(batch[0]?.leavesAppended, 2, 'both tenants in one checkpoint');
    } finally {
      await checkpointer.stop();
    }
  });

  test('AUD-4: the database being unreachable is retried, not fatal: polling goes on', async () => {
    const broken = audit.db.connectAs({ user: 'enclave_app', password: 'wrong password' }, 1);
    const warnings: unknown[] = [];
    let polls = 0;
    const seen = Promise.withResolvers<void>();
    const checkpointer = startCheckpointer({
      sql: broken,
      checkpoints: { makeCheckpoint: () => Promise.reject(new Error('not reached')) },
      delaySeconds: 1,
      logger: { warn: (fields: unknown) => warnings.push(fields) },
      onPoll: () => {
        if (++polls === 3) seen.resolve();
      },
    });
    try {
      await seen.promise;
      assert.equal(warnings.length, 1, 'one warning per outage, not one per poll');
    } finally {
      await checkpointer.stop();
    }
  });
});
