import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createCheckpointService, loadTenantProof } from '../src/audit/checkpoint-log.ts';
import { tempAuditSetup } from '../test/helpers/audit.ts';
import { createTestDatabase, type TestDatabase } from '../test/helpers/database.ts';
import { median, summarize } from './ab.ts';

// `npm run bench`, the checkpoint log (AUD-4, issue 12): what a checkpoint of
// 1,000 moved heads and one tenant's inclusion proof cost as the log grows,
// at 10k, 100k and 1M leaves, and the longest stall of this process's event
// loop while a checkpoint runs. The log is stored as its perfect subtrees, so
// both should stay nearly flat: the ratios against the 10k log are the
// result. Each checkpoint also signs the head map of all 6,000 tenants. Sizes
// run in interleaved rounds, each on its own database; the per-round ratios
// against 10k go to the final table.

const SIZES = [10_000, 100_000, 1_000_000];
const MOVED = 1000;
const FILLERS = 5000;
const ROUNDS = 6;
const PROOFS_PER_ROUND = 50;

interface Log {
  readonly size: number;
  readonly db: TestDatabase;
  readonly tenants: string[];
  readonly checkpointMs: number[];
  readonly proofMs: number[];
  /** The median proof time of each round. */
  readonly proofRoundMs: number[];
  stallMs: number;
}

/**
 * A log of `size` leaves from FILLERS other tenants, stored as the migrations
 * store it, and MOVED tenants with heads. (Spread over many tenants, as a real
 * log is: the planner finds a tenant's newest leaf through (tenant_id, idx).)
 */
async function seed(size: number): Promise<Log> {
  const db = await createTestDatabase();
  const fillers = Array.from({ length: FILLERS }, () => randomUUID());
  const tenants = Array.from({ length: MOVED }, () => randomUUID());
  await db.superuser`insert into tenants (id, name) select id, 'bench' from unnest(${[...fillers, ...tenants]}::uuid[]) id`;
  await db.superuser`
    insert into checkpoint_leaves (idx, tenant_id, seq, head_hash, leaf_hash)
    select i, f.id, i / ${FILLERS} + 1, sha256(int8send(i)),
           sha256('\\x0001'::bytea || uuid_send(f.id) || int8send(i / ${FILLERS} + 1) || sha256(int8send(i)))
    from generate_series(0, ${size - 1}) i
    join unnest(${fillers}::uuid[]) with ordinality f(id, n) on f.n = i % ${FILLERS} + 1`;
  // Each filler tenant's newest leaf is its head map entry (0012_checkpoint_nodes.sql).
  await db.superuser`
    insert into checkpoint_tenant_heads (tenant_id, idx, seq, head_hash)
    select distinct on (tenant_id) tenant_id, idx, seq, head_hash from checkpoint_leaves order by tenant_id, idx desc`;
  // Every perfect subtree, level by level, as 0012_checkpoint_nodes.sql builds them.
  await db.superuser`insert into checkpoint_nodes (level, idx, hash) select 0, idx, leaf_hash from checkpoint_leaves`;
  for (let level = 0; ; level++) {
    const added = await db.superuser`
      insert into checkpoint_nodes (level, idx, hash)
      select ${level + 1}, a.idx / 2, sha256('\\x01'::bytea || a.hash || b.hash)
      from checkpoint_nodes a join checkpoint_nodes b on b.level = ${level} and b.idx = a.idx + 1
      where a.level = ${level} and a.idx % 2 = 0`;
    if (added.count === 0) break;
  }
  await db.superuser`
    insert into audit_heads (tenant_id, seq, hash)
    select id, 1, sha256(convert_to(id::text, 'UTF8')) from unnest(${tenants}::uuid[]) id`;
  await db.superuser`analyze checkpoint_leaves, checkpoint_nodes, audit_heads`;
  return { size, db, tenants, checkpointMs: [], proofMs: [], proofRoundMs: [], stallMs: 0 };
}

async function round(log: Log, checkpoints: ReturnType<typeof createCheckpointService>): Promise<void> {
  // Every bench tenant's head moves (as a burst of activity would), outside the timing.
  await log.db.superuser`
    update audit_heads set seq = seq + 1, hash = sha256(hash) where tenant_id = any(${log.tenants}::uuid[])`;
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const started = performance.now();
  const made = await checkpoints.makeCheckpoint();
  log.checkpointMs.push(performance.now() - started);
  loop.disable();
  log.stallMs = Math.max(log.stallMs, loop.max / 1e6);
  if (made.leavesAppended !== MOVED)
    throw new Error(`expected ${MOVED} new leaves, got ${made.leavesAppended}`);
  const proofs: number[] = [];
  for (let i = 0; i < PROOFS_PER_ROUND; i++) {
    const tenant = log.tenants[(i * 37) % MOVED] as string;
    const at = performance.now();
    const proof = await loadTenantProof(log.db.app, tenant, { newestOnly: true });
    proofs.push(performance.now() - at);
    if (proof.leaves.length !== 1) throw new Error('no proof');
  }
  log.proofMs.push(...proofs);
  log.proofRoundMs.push(median(proofs));
}

function spread(values: readonly number[]): { min: number; median: number; max: number } {
  return { min: Math.min(...values), median: median(values), max: Math.max(...values) };
}

/** Per round, the cost at one size over the cost at the smallest: flat is 1×. */
const perRound = (at: readonly number[], base: readonly number[]) => at.map((ms, r) => ms / (base[r] ?? ms));

export async function runCheckpointBench(): Promise<void> {
  const { setup, dir } = await tempAuditSetup();
  console.log(
    `\nCheckpoint log: seeding logs of ${SIZES.map((s) => s.toLocaleString('en-US')).join(', ')} leaves…`,
  );
  const logs: Log[] = [];
  for (const size of SIZES) logs.push(await seed(size));
  try {
    const services = logs.map((log) =>
      createCheckpointService({
        sql: log.db.app,
        signing: setup.signing,
        publisher: { publish: async () => 'created' as const },
        logger: { info: () => {}, error: () => {} },
      }),
    );
    // The first checkpoint of each log signs its whole seeded history once: not measured.
    await Promise.all(services.map((service) => service.makeCheckpoint()));
    for (let r = 0; r < ROUNDS; r++) {
      // Interleaved: each round visits every size, starting from a different one.
      for (let k = 0; k < logs.length; k++) {
        const i = (r + k) % logs.length;
        await round(logs[i] as Log, services[i] as ReturnType<typeof createCheckpointService>);
      }
    }
    const base = logs[0] as Log;
    const baseCheckpoint = spread(base.checkpointMs).median;
    const baseProof = spread(base.proofMs).median;
    console.table(
      logs.map((log) => {
        const checkpoint = spread(log.checkpointMs);
        const proof = spread(log.proofMs);
        return {
          leaves: log.size.toLocaleString('en-US'),
          [`checkpoint of ${MOVED} heads, ms (min/median/max)`]: `${checkpoint.min.toFixed(0)} / ${checkpoint.median.toFixed(0)} / ${checkpoint.max.toFixed(0)}`,
          'vs 10k': `${(checkpoint.median / baseCheckpoint).toFixed(2)}×`,
          'proof, ms (min/median/max)': `${proof.min.toFixed(1)} / ${proof.median.toFixed(1)} / ${proof.max.toFixed(1)}`,
          'proof vs 10k': `${(proof.median / baseProof).toFixed(2)}×`,
          'longest event-loop stall, ms': log.stallMs.toFixed(1),
        };
      }),
    );
    for (const log of logs.slice(1)) {
      const leaves = log.size.toLocaleString('en-US');
      const versus = { a: { label: `${leaves} leaves` }, b: { label: '10,000 leaves' } };
      summarize(
        {
          name: `checkpoint of ${MOVED} moved heads, ${leaves} leaves vs 10k`,
          ratio: 'time',
          aim: { atMost: 1.5 },
          ...versus,
        },
        perRound(log.checkpointMs, base.checkpointMs),
        { a: spread(log.checkpointMs).median, b: baseCheckpoint },
      );
      summarize(
        { name: `inclusion proof, ${leaves} leaves vs 10k`, ratio: 'time', aim: { atMost: 1.5 }, ...versus },
        perRound(log.proofRoundMs, base.proofRoundMs),
        { a: spread(log.proofMs).median, b: baseProof },
      );
    }
    console.log(
      'Targets (issue 12): at 1M leaves a checkpoint of 1,000 moved heads under 1 s, a proof under 50 ms, no stall over 50 ms.',
    );
  } finally {
    await Promise.all(logs.map((log) => log.db.drop()));
    await rm(dir, { recursive: true, force: true });
  }
}
