import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createAccount, randomClientIp, type TestAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { median, percentile, summarize } from './ab.ts';

// `npm run bench -- login-storm`: 50 concurrent sign-ins with real passwords
// against the listening app, while a prober asks for /healthz and a static
// file one after the other, as a monitoring check and a browser would.
// Interleaved rounds: a storm round (until every sign-in is answered), then an
// idle round of the prober alone, alternating which goes first.
//
// The aim in #13 is absolute: /healthz p99 under 50 ms during the storm. A
// ratio against idle would hide it (idle p99 is a millisecond or two, so a
// 20× ratio can still be well within budget, or not), so the ratios with an
// aim are each round's p99 over that 50 ms budget, aim ≤ 1×; the ratio to
// idle is printed beside them without an aim. Event-loop delay, latencies,
// the time for the storm to clear, refusals and RSS are printed per round.

const SIGN_INS = 50;
const ACCOUNTS = 5;
const ROUNDS = 6;
const IDLE_MS = 1500;
const PROBE_GAP_MS = 10;
const BUDGET_MS = 50;

interface Probe {
  readonly healthz: number[];
  readonly css: number[];
  rssPeak: number;
}

interface StormRound {
  readonly probe: Probe;
  readonly clearMs: number;
  readonly loopP99: number;
  readonly loopMax: number;
  readonly statuses: Map<number, number>;
}

function request(
  port: number,
  options: {
    method: 'GET' | 'POST';
    path: string;
    agent: http.Agent | false;
    body?: string;
    origin?: string;
  },
): Promise<number> {
  const { promise, resolve, reject } = Promise.withResolvers<number>();
  const headers: http.OutgoingHttpHeaders =
    options.body === undefined
      ? {}
      : {
          'content-type': 'application/x-www-form-urlencoded',
          'content-length': Buffer.byteLength(options.body),
          origin: options.origin,
          'x-forwarded-for': randomClientIp(),
        };
  const outgoing = http.request(
    { host: '127.0.0.1', port, method: options.method, path: options.path, agent: options.agent, headers },
    (response) => {
      response.resume();
      response.on('end', () => resolve(response.statusCode ?? 0));
      response.on('error', reject);
    },
  );
  outgoing.on('error', reject);
  outgoing.end(options.body);
  return promise;
}

/** /healthz then the stylesheet, again and again, until `done` resolves; latencies in ms. */
async function probe(port: number, agent: http.Agent, done: Promise<unknown>): Promise<Probe> {
  const result: Probe = { healthz: [], css: [], rssPeak: process.memoryUsage.rss() };
  let finished = false;
  void done.finally(() => {
    finished = true;
  });
  while (!finished) {
    for (const [path, into] of [
      ['/healthz', result.healthz],
      ['/static/app.css', result.css],
    ] as const) {
      const started = performance.now();
      const status = await request(port, { method: 'GET', path, agent });
      if (status !== 200) throw new Error(`${path} answered ${status} during the bench`);
      into.push(performance.now() - started);
    }
    result.rssPeak = Math.max(result.rssPeak, process.memoryUsage.rss());
    await new Promise((resolve) => setTimeout(resolve, PROBE_GAP_MS));
  }
  return result;
}

async function stormRound(port: number, agent: http.Agent, accounts: TestAccount[], origin: string) {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const started = performance.now();
  const storm = Promise.all(
    Array.from({ length: SIGN_INS }, (_, i) => {
      const account = accounts[i % accounts.length] as TestAccount;
      const body = new URLSearchParams({
        login: account.user.username,
        password: account.password,
      }).toString();
      return request(port, { method: 'POST', path: '/login', agent: false, body, origin });
    }),
  );
  const cleared = storm.then(() => performance.now() - started);
  const [probed, answers, clearMs] = await Promise.all([probe(port, agent, storm), storm, cleared]);
  loop.disable();
  const statuses = new Map<number, number>();
  for (const status of answers) statuses.set(status, (statuses.get(status) ?? 0) + 1);
  const unexpected = [...statuses.keys()].filter((status) => status !== 303 && status !== 429);
  if (unexpected.length > 0) throw new Error(`sign-ins answered ${unexpected.join(', ')}`);
  return { probe: probed, clearMs, loopP99: loop.percentile(99) / 1e6, loopMax: loop.max / 1e6, statuses };
}

async function idleRound(port: number, agent: http.Agent): Promise<Probe> {
  return probe(port, agent, new Promise((resolve) => setTimeout(resolve, IDLE_MS)));
}

const ms = (value: number) => `${value.toFixed(1)} ms`;

export async function runLoginStormBench(db: TestDatabase): Promise<void> {
  // Sign-ins name their own addresses (X-Forwarded-For), as a crowd would: the per-address bucket stays out of it.
  const testApp = await buildTestApp(db, { ENCLAVE_TRUST_PROXY: '1' }, { passwordCost: 'production' });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const accounts: TestAccount[] = [];
    for (let i = 0; i < ACCOUNTS; i += 1) accounts.push(await createAccount(db, testApp));
    await testApp.app.listen({ port: 0, host: '127.0.0.1' });
    const port = (testApp.app.server.address() as AddressInfo).port;
    const origin = testApp.config.publicUrl;
    await idleRound(port, agent);

    const storms: StormRound[] = [];
    const idles: Probe[] = [];
    for (let round = 0; round < ROUNDS; round += 1) {
      if (round % 2 === 0) {
        storms.push(await stormRound(port, agent, accounts, origin));
        idles.push(await idleRound(port, agent));
      } else {
        idles.push(await idleRound(port, agent));
        storms.push(await stormRound(port, agent, accounts, origin));
      }
    }

    const healthP99 = storms.map((storm) => percentile(storm.probe.healthz, 99));
    const cssP99 = storms.map((storm) => percentile(storm.probe.css, 99));
    const idleHealthP99 = idles.map((idle) => percentile(idle.healthz, 99));
    const stormLabel = `${SIGN_INS} concurrent sign-ins`;
    const reports = [
      summarize(
        {
          name: 'login storm: /healthz p99 vs the 50 ms budget',
          ratio: 'time',
          a: { label: `/healthz p99 during ${stormLabel}` },
          b: { label: `${BUDGET_MS} ms (the aim of #13)` },
          aim: { atMost: 1 },
        },
        healthP99.map((p99) => p99 / BUDGET_MS),
        { a: median(healthP99), b: BUDGET_MS },
      ),
      summarize(
        {
          name: 'login storm: static file p99 vs the 50 ms budget',
          ratio: 'time',
          a: { label: `GET /static/app.css p99 during ${stormLabel}` },
          b: { label: `${BUDGET_MS} ms` },
          aim: { atMost: 1 },
        },
        cssP99.map((p99) => p99 / BUDGET_MS),
        { a: median(cssP99), b: BUDGET_MS },
      ),
      summarize(
        {
          name: 'login storm: /healthz p99 during the storm vs idle',
          ratio: 'time',
          a: { label: `/healthz p99 during ${stormLabel}` },
          b: { label: '/healthz p99 idle' },
        },
        healthP99.map((p99, i) => p99 / (idleHealthP99[i] ?? Number.NaN)),
        { a: median(healthP99), b: median(idleHealthP99) },
      ),
    ];
    for (const report of reports) {
      console.log(
        `\n${report.name}: ${report.a} vs ${report.b}, ${report.perRound.length} interleaved rounds` +
          `\n  min ${report.min.toFixed(2)}×  median ${report.median.toFixed(2)}×  max ${report.max.toFixed(2)}×` +
          (report.noisy ? '  NOISY: spread over 30% of the median' : '') +
          (report.met === undefined ? '' : `  aim ≤ 1×: ${report.met ? 'met' : 'MISSED'}`),
      );
    }

    console.log(
      `\nlogin storm, per round (${SIGN_INS} sign-ins on ${ACCOUNTS} accounts; the app's own settings):`,
    );
    console.table(
      storms.map((storm, i) => ({
        'storm clears in': ms(storm.clearMs),
        '303 / 429': `${storm.statuses.get(303) ?? 0} / ${storm.statuses.get(429) ?? 0}`,
        'event loop p99 / max': `${ms(storm.loopP99)} / ${ms(storm.loopMax)}`,
        '/healthz p50 / p99 / max': `${ms(percentile(storm.probe.healthz, 50))} / ${ms(percentile(storm.probe.healthz, 99))} / ${ms(Math.max(...storm.probe.healthz))}`,
        'app.css p50 / p99 / max': `${ms(percentile(storm.probe.css, 50))} / ${ms(percentile(storm.probe.css, 99))} / ${ms(Math.max(...storm.probe.css))}`,
        'idle /healthz p99': ms(idleHealthP99[i] ?? Number.NaN),
        'RSS peak (idle)': `${Math.round(storm.probe.rssPeak / 2 ** 20)} MiB (${Math.round((idles[i]?.rssPeak ?? Number.NaN) / 2 ** 20)} MiB)`,
      })),
    );
  } finally {
    agent.destroy();
    await testApp.app.close();
  }
}
