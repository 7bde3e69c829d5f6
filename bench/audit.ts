import { hash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { appendAuditEvent } from '../src/audit/append.ts';
import { formatEventLine } from '../src/audit/bundle-format.ts';
import { canonicalEvent, eventHash, GENESIS_HASH } from '../src/audit/event.ts';
import { verifyBundleFile } from '../src/audit/verify-cli.ts';
import { withTenant } from '../src/db/tenant.ts';
import {
  checkpointKey,
  checkpointLine,
  genesis,
  headerLine,
  syntheticLog,
} from '../test/helpers/audit-bundle.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare } from './ab.ts';

// `npm run bench`, the audit part (AUD-2, AUD-3, AUD-5). Two questions, each
// answered as a ratio against a baseline measured in the same run, so the
// ratio holds on a noisy machine even when the absolute numbers do not:
//
// 1. What the chain costs an append: appendAuditEvent in withTenant (lock the
//    tenant's head, build and hash the canonical text, the database checks and
//    stores it) against a plain INSERT of the same row into an unchained copy
//    of the table, one row per transaction, both as enclave_app. For one
//    tenant with one writer, and for 50 tenants across 8 concurrent writers.
//    Targets: ≥ 60% (one tenant), ≥ 50% (50 tenants).
// 2. What verification costs: enclave-verify on a generated bundle of
//    1,000,000 events (the file read, split, parsed and every check made)
//    against a bare SHA-256 loop over the same canonical bytes (already in
//    memory, already UTF-8), one whole pass each, in interleaved rounds
//    (bench/ab.ts). Aim: ≥ 0.5×.

const APPEND_MS = 4000;
const ROUNDS = 8;
const WARMUP_MS = 300;
const TENANTS = 50;
const WRITERS = 8;
const VERIFY_EVENTS = 1_000_000;

interface Rate {
  readonly ops: number;
  readonly perSecond: number;
}

/** Runs `op` from `writers` concurrent loops for `ms`; how many ops completed. */
async function runFor(writers: number, ms: number, op: () => Promise<unknown>): Promise<number> {
  const end = performance.now() + ms;
  let ops = 0;
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (performance.now() < end) {
        await op();
        ops++;
      }
    }),
  );
  return ops;
}

/**
 * Plain and chained in alternating short rounds (each first in every other
 * round), so a neighbour's load or a checkpoint of the database's own hits
 * both alike; ops per second of each over all its rounds.
 */
async function compareAppends(
  writers: number,
  plain: () => Promise<unknown>,
  chained: () => Promise<unknown>,
): Promise<{ plain: Rate; chained: Rate }> {
  await runFor(writers, WARMUP_MS, plain);
  await runFor(writers, WARMUP_MS, chained);
  const totals = { plain: { ops: 0, ms: 0 }, chained: { ops: 0, ms: 0 } };
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? (['plain', 'chained'] as const) : (['chained', 'plain'] as const);
    for (const kind of order) {
      const started = performance.now();
      totals[kind].ops += await runFor(writers, APPEND_MS / ROUNDS, kind === 'plain' ? plain : chained);
      totals[kind].ms += performance.now() - started;
    }
  }
  const rate = (t: { ops: number; ms: number }): Rate => ({ ops: t.ops, perSecond: t.ops / (t.ms / 1000) });
  return { plain: rate(totals.plain), chained: rate(totals.chained) };
}

const event = (n: number) => ({
  actor: 'system',
  action: 'bench.append',
  target: null,
  data: { n, ip: '203.0.113.7', note: 'an event of ordinary size' },
});

async function appendBench(db: TestDatabase): Promise<{ one: number; many: number }> {
  await db.superuser`
    create table enclave.bench_plain_events (
      tenant_id uuid not null, seq bigint not null, occurred_at timestamptz not null, actor text not null,
      action text not null, target text, data jsonb not null, prev_hash bytea not null, hash bytea not null,
      canonical text not null, primary key (tenant_id, seq))`;
  await db.superuser`grant insert on enclave.bench_plain_events to enclave_app`;
  const tenants = Array.from({ length: TENANTS + 1 }, () => crypto.randomUUID());
  await db.superuser`
    insert into tenants (id, name) select id, 'bench audit' from unnest(${tenants}::uuid[]) as t(id)`;
  const plainSeq = new Map<string, number>();

  let n = 0;
  const chained = (tenant: string) =>
    withTenant(db.app, tenant, (tx) => appendAuditEvent(tx, tenant, event(n++)));
  // The same row, built the same way (canonical text and its hash), inserted with no chain and no tenant binding.
  const plain = async (tenant: string) => {
    const seq = (plainSeq.get(tenant) ?? 0) + 1;
    plainSeq.set(tenant, seq);
    const ts = new Date().toISOString();
    const fields = event(n++);
    const canonical = canonicalEvent({ tenant, seq, ts, ...fields });
    const digest = eventHash(GENESIS_HASH, canonical);
    await db.app.begin(
      (tx) => tx`
        insert into enclave.bench_plain_events
          (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash, canonical)
        values (${tenant}::uuid, ${seq}, ${ts}::timestamptz, ${fields.actor}, ${fields.action}, ${fields.target},
                ${tx.json(fields.data)}, ${GENESIS_HASH}, ${digest}, ${canonical})`,
    );
  };

  const solo = tenants[TENANTS] as string;
  const single = await compareAppends(
    1,
    () => plain(solo),
    () => chained(solo),
  );
  let next = 0;
  const pick = () => tenants[next++ % TENANTS] as string;
  const spread = await compareAppends(
    WRITERS,
    () => plain(pick()),
    () => chained(pick()),
  );

  const row = (label: string, plainRate: Rate, chainedRate: Rate, target: number) => {
    const ratio = chainedRate.perSecond / plainRate.perSecond;
    const verdict = ratio >= target ? 'meets' : 'MISSES';
    console.log(
      `${label}: chained ${chainedRate.perSecond.toFixed(0)}/s (${chainedRate.ops} appends), plain ${plainRate.perSecond.toFixed(0)}/s` +
        ` → ${(ratio * 100).toFixed(0)}% of plain (${verdict} the ${target * 100}% target)`,
    );
    return ratio;
  };
  console.log(
    `\nAudit append, one row per transaction as enclave_app, ${APPEND_MS / 1000} s each in ${ROUNDS} alternating rounds:`,
  );
  const one = row('  1 tenant, 1 writer   ', single.plain, single.chained, 0.6);
  const many = row(`  ${TENANTS} tenants, ${WRITERS} writers`, spread.plain, spread.chained, 0.5);
  await db.superuser`drop table enclave.bench_plain_events`;
  return { one, many };
}

const BENCH_EVENT = {
  action: 'session.login',
  data: { ip: '203.0.113.7', method: 'password', user_agent: 'Mozilla/5.0 (X11; Linux x86_64)' },
};

/**
 * The next event of a generated chain. canonicalEvent checks and
 * canonicalizes every field, which costs more than the verification measured
 * here, so the text is written out in canonical order directly — and checked
 * against canonicalEvent every 50,000 events.
 */
function benchEvent(tenant: string, state: { seq: number; hash: Buffer }) {
  const seq = state.seq + 1;
  const ts = new Date(Date.UTC(2026, 0, 1) + seq * 1000).toISOString();
  const target = `session:${seq.toString(16).padStart(8, '0')}-0000-4000-8000-000000000000`;
  const { action, data } = BENCH_EVENT;
  const canonical =
    `{"action":"${action}","actor":"user:${tenant}","data":{"ip":"${data.ip}","method":"${data.method}",` +
    `"user_agent":"${data.user_agent}"},"seq":${seq},"target":"${target}","tenant":"${tenant}","ts":"${ts}","v":1}`;
  if (seq % 50_000 === 1) {
    const reference = canonicalEvent({ tenant, seq, ts, actor: `user:${tenant}`, action, target, data });
    if (reference !== canonical)
      throw new Error(`bench event ${seq} is not canonical:\n${canonical}\n${reference}`);
  }
  const prevHash = state.hash;
  const digest = eventHash(prevHash, canonical);
  state.seq = seq;
  state.hash = digest;
  return { canonical, line: formatEventLine(digest, prevHash, canonical) };
}

async function verifyBench(): Promise<number> {
  const dir = await mkdtemp(path.join(tmpdir(), 'enclave-bench-verify-'));
  try {
    const tenant = crypto.randomUUID();
    const key = checkpointKey();
    const file = path.join(dir, 'bundle.jsonl');
    const out = createWriteStream(file, { highWaterMark: 4 * 1024 * 1024 });
    // The canonical bytes the bare loop hashes: one buffer, with offsets.
    let bytes = Buffer.allocUnsafe(512 * 1024 * 1024);
    const offsets = new Uint32Array(VERIFY_EVENTS + 1);
    const state = genesis();
    const generated = performance.now();
    let pending: string[] = [];
    const flush = async () => {
      if (!out.write(`${pending.join('\n')}\n`)) await once(out, 'drain');
      pending = [];
    };
    for (let i = 0; i < VERIFY_EVENTS; i++) {
      const e = benchEvent(tenant, state);
      const at = offsets[i] as number;
      if (at + e.canonical.length * 3 > bytes.length)
        bytes = Buffer.concat([bytes, Buffer.allocUnsafe(bytes.length)]);
      offsets[i + 1] = at + bytes.write(e.canonical, at, 'utf8');
      pending.push(e.line);
      if (pending.length === 10_000) await flush();
    }
    if (pending.length > 0) await flush();
    out.end();
    await once(out, 'close');
    // The header and checkpoint (over the final head) come first in a bundle: the events are copied after them.
    const log = syntheticLog({ tenant, heads: [{ ...state }], key, othersBetween: 1000 });
    const bundle = path.join(dir, 'bundle-full.jsonl');
    const joined = createWriteStream(bundle, { highWaterMark: 4 * 1024 * 1024 });
    joined.write(`${headerLine(tenant, key)}\n${checkpointLine(log, key)}\n`);
    for await (const chunk of createReadStream(file, { highWaterMark: 4 * 1024 * 1024 })) {
      if (!joined.write(chunk)) await once(joined, 'drain');
    }
    joined.end();
    await once(joined, 'close');
    await rm(file);
    const total = offsets[VERIFY_EVENTS] as number;
    console.log(
      `\nGenerated a ${VERIFY_EVENTS.toLocaleString('en-US')}-event bundle (${(total / 1e6).toFixed(0)} MB of canonical text) in ${((performance.now() - generated) / 1000).toFixed(1)} s.`,
    );

    const mb = total / 1e6;
    const scratch = Buffer.allocUnsafe(64 * 1024);
    const report = await compare({
      name: `the offline verifier vs a bare SHA-256 loop, ${VERIFY_EVENTS.toLocaleString('en-US')} events`,
      ratio: 'throughput',
      per: { ops: 1 },
      aim: { atLeast: 0.5 },
      a: {
        label: 'enclave-verify (whole file read, parsed and checked)',
        op: async () => {
          const verified = await verifyBundleFile(bundle, { pinnedKey: key.verifierKey });
          if (!verified.ok || verified.eventsVerified !== VERIFY_EVENTS) {
            throw new Error(`the generated bundle did not verify: ${JSON.stringify(verified.problems)}`);
          }
        },
      },
      b: {
        label: 'a bare SHA-256 loop over the canonical bytes in memory',
        op: async () => {
          let prev: Buffer = Buffer.from(GENESIS_HASH);
          for (let i = 0; i < VERIFY_EVENTS; i++) {
            const start = offsets[i] as number;
            const end = offsets[i + 1] as number;
            prev.copy(scratch, 0);
            bytes.copy(scratch, 32, start, end);
            prev = hash('sha256', scratch.subarray(0, 32 + end - start), 'buffer');
          }
          if (!prev.equals(state.hash)) throw new Error('the bare loop did not reach the chain head');
        },
      },
    });
    const perSecond = (ms: number) => 1000 / (ms / VERIFY_EVENTS);
    console.log(
      `  enclave-verify ${perSecond(report.msPerOp.a).toFixed(0)} events/s (${((mb * 1000) / report.msPerOp.a).toFixed(0)} MB/s of canonical text); ` +
        `bare loop ${perSecond(report.msPerOp.b).toFixed(0)} events/s (${((mb * 1000) / report.msPerOp.b).toFixed(0)} MB/s)`,
    );
    return report.median;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export async function runAuditBench(db: TestDatabase): Promise<void> {
  await appendBench(db);
  await verifyBench();
}
