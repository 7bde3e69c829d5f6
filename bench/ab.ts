// Interleaved A/B rounds, the one way `npm run bench` states a cost. Each
// round runs A and B back to back, alternating which goes first, so drift on
// a noisy machine (a neighbour, thermal throttling, the GC) hits both alike;
// a ratio is computed per round and reported as min, median and max. A ratio
// whose spread (max − min) exceeds 30% of its median is flagged as noisy:
// its median is then a hint, not a verdict.

const MIN_ROUNDS = 6;
const NOISY_SPREAD = 0.3;

export interface Side {
  readonly label: string;
  readonly op: () => Promise<void>;
}

/** What a ratio must reach: at least (higher is better) or at most (lower is better). */
export type Aim = { readonly atLeast: number } | { readonly atMost: number };

export interface Comparison {
  readonly name: string;
  readonly a: Side;
  readonly b: Side;
  /**
   * `throughput`: A's operations per second over B's (1 = as fast, below 1 = slower).
   * `time`: A's time per operation over B's (1 = as fast, above 1 = slower).
   */
  readonly ratio: 'throughput' | 'time';
  /** Per side per round: run for `ms` from `concurrency` loops, or run `ops` operations one after another. */
  readonly per: { readonly ms: number; readonly concurrency?: number } | { readonly ops: number };
  readonly rounds?: number;
  /** Run before the first round, on each side (default: one round's worth). */
  readonly warmup?: boolean;
  readonly aim?: Aim;
}

export interface RatioReport {
  readonly name: string;
  readonly ratio: 'throughput' | 'time';
  readonly a: string;
  readonly b: string;
  readonly perRound: readonly number[];
  readonly min: number;
  readonly median: number;
  readonly max: number;
  readonly noisy: boolean;
  readonly aim: Aim | undefined;
  /** Whether the median meets the aim; undefined without one. */
  readonly met: boolean | undefined;
  /** Median milliseconds per operation of each side, for the log. */
  readonly msPerOp: { readonly a: number; readonly b: number };
}

const reports: RatioReport[] = [];

/** The nearest-rank `p`th percentile (0 < p ≤ 100) of `values`, in any order; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  const middle = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** Milliseconds per operation of one side for one round. */
async function measure(side: Side, per: Comparison['per']): Promise<number> {
  if ('ops' in per) {
    const started = performance.now();
    for (let i = 0; i < per.ops; i++) await side.op();
    return (performance.now() - started) / per.ops;
  }
  const started = performance.now();
  const end = started + per.ms;
  let done = 0;
  await Promise.all(
    Array.from({ length: per.concurrency ?? 1 }, async () => {
      while (performance.now() < end) {
        await side.op();
        done++;
      }
    }),
  );
  return (performance.now() - started) / Math.max(done, 1);
}

export function meets(aim: Aim, value: number): boolean {
  return 'atLeast' in aim ? value >= aim.atLeast : value <= aim.atMost;
}

export function describeAim(aim: Aim | undefined): string {
  if (aim === undefined) return '—';
  return 'atLeast' in aim ? `≥ ${aim.atLeast}×` : `≤ ${aim.atMost}×`;
}

/** Runs the comparison, prints its line and keeps it for the final table. */
export async function compare(comparison: Comparison): Promise<RatioReport> {
  const rounds = Math.max(comparison.rounds ?? MIN_ROUNDS, MIN_ROUNDS);
  if (comparison.warmup !== false) {
    await measure(comparison.a, comparison.per);
    await measure(comparison.b, comparison.per);
  }
  const perRound: number[] = [];
  const aMs: number[] = [];
  const bMs: number[] = [];
  for (let round = 0; round < rounds; round++) {
    let a: number;
    let b: number;
    if (round % 2 === 0) {
      a = await measure(comparison.a, comparison.per);
      b = await measure(comparison.b, comparison.per);
    } else {
      b = await measure(comparison.b, comparison.per);
      a = await measure(comparison.a, comparison.per);
    }
    aMs.push(a);
    bMs.push(b);
    // Throughput of A over B is B's time per op over A's.
    perRound.push(comparison.ratio === 'throughput' ? b / a : a / b);
  }
  const report = summarize(comparison, perRound, { a: median(aMs), b: median(bMs) });
  printRatio(report);
  return report;
}

/** Turns per-round ratios measured elsewhere (e.g. by a scenario with its own loop) into a report. */
export function summarize(
  comparison: Pick<Comparison, 'name' | 'ratio' | 'aim'> & {
    readonly a: { label: string };
    readonly b: { label: string };
  },
  perRound: readonly number[],
  msPerOp: { a: number; b: number },
): RatioReport {
  const mid = median(perRound);
  const min = Math.min(...perRound);
  const max = Math.max(...perRound);
  const report: RatioReport = {
    name: comparison.name,
    ratio: comparison.ratio,
    a: comparison.a.label,
    b: comparison.b.label,
    perRound,
    min,
    median: mid,
    max,
    noisy: perRound.length < MIN_ROUNDS || (max - min) / mid > NOISY_SPREAD,
    aim: comparison.aim,
    met: comparison.aim === undefined ? undefined : meets(comparison.aim, mid),
    msPerOp,
  };
  reports.push(report);
  return report;
}

const fixed = (value: number) => `${value.toFixed(2)}×`;

function printRatio(report: RatioReport): void {
  const what = report.ratio === 'throughput' ? 'throughput of' : 'time per operation of';
  console.log(
    `\n${report.name}: ${what} ${report.a} vs ${report.b}, ${report.perRound.length} interleaved rounds` +
      `\n  min ${fixed(report.min)}  median ${fixed(report.median)}  max ${fixed(report.max)}` +
      `  (${report.msPerOp.a.toFixed(3)} vs ${report.msPerOp.b.toFixed(3)} ms per op)` +
      (report.noisy ? '  NOISY: spread over 30% of the median' : '') +
      (report.aim === undefined
        ? ''
        : `  aim ${describeAim(report.aim)}: ${report.met === true ? 'met' : 'MISSED'}`),
  );
}

/** The final table: every ratio of this run against its aim. */
export function printSummary(): void {
  if (reports.length === 0) return;
  console.log('\nEvery ratio of this run (median of interleaved rounds; min–max in brackets):');
  console.table(
    reports.map((report) => ({
      ratio: report.name,
      kind: report.ratio,
      median: fixed(report.median),
      'min–max': `${fixed(report.min)}–${fixed(report.max)}`,
      noisy: report.noisy ? 'yes' : '',
      aim: describeAim(report.aim),
      met: report.met === undefined ? '' : report.met ? 'yes' : 'NO',
    })),
  );
}
