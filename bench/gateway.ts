import http from 'node:http';
import { startGatewayFixture } from '../test/helpers/gateway.ts';
import { compare, median, percentile } from './ab.ts';

// `npm run bench -- gateway` (AGT-7): what the model gateway costs an agent,
// against the same requests sent straight to the same fake upstream in the
// same run. Through the gateway a call is: the agent's loopback port (the
// supervisor's bridge, here in-process), the gateway socket, the token and
// limit checks and the key's lending (one tenant transaction), the upstream
// request with the key, the answer piped back with its usage read, and a
// usage row written in a batch. Straight: the same request to the fake with
// the key. Fake, gateway and client share this one process, so the ratios
// are pessimistic next to a gateway in a worker of its own.
//
// Aims (issue #14): at least 90% of the direct throughput, and under 1 ms of
// added median latency. Against a fake that answers at once, the throughput
// ratio measures the gateway's whole per-call work (a tenant transaction to
// read the key among it) against almost none; so it is measured again against
// the same fake answering after 20 ms, still far quicker than any real model
// call, where what the gateway adds is seen at its real scale.

const KEY = 'sk-ant-bench-key-000000000000';
const MESSAGE = JSON.stringify({
  model: 'claude-sonnet-4-5',
  max_tokens: 64,
  messages: [{ role: 'user', content: 'one two three four five six seven eight' }],
});
const STREAMED = JSON.stringify({ ...JSON.parse(MESSAGE), stream: true });
const LATENCY_SAMPLES = 400;
/** The slower upstream's delay before it answers: a fast model answers in hundreds of ms. */
const UPSTREAM_MS = 20;

function post(agent: http.Agent, url: string, headers: Record<string, string>, body: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: 'POST', agent, headers }, (response) => {
      response.resume();
      response.once('end', () =>
        response.statusCode === 200 ? resolve() : reject(new Error(`status ${response.statusCode}`)),
      );
    });
    request.once('error', reject);
    request.end(body);
  });
}

export async function runGatewayBench(): Promise<void> {
  const fx = await startGatewayFixture({ keys: { anthropic: [KEY] } });
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 16 });
  try {
    const agent = await fx.agent(await fx.tenant(), { anthropic: KEY });
    const headers = { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' };
    let sent = 0;
    let slow = false;
    const tidy = () => {
      // The fake keeps every call it saw: emptied now and then so memory stays flat (which clears its faults too).
      if (++sent % 2000 !== 0) return;
      fx.fakes.anthropic.reset();
      if (slow) fx.fakes.anthropic.fail({ kind: 'slow', ms: UPSTREAM_MS });
    };
    const direct = (body: string) => async () => {
      tidy();
      await post(keepAlive, `${fx.fakes.anthropic.url}/v1/messages`, { ...headers, 'x-api-key': KEY }, body);
    };
    const gateway = (body: string) => async () => {
      tidy();
      await post(
        keepAlive,
        `${agent.url}/anthropic/v1/messages`,
        { ...headers, 'x-api-key': agent.token },
        body,
      );
    };
    for (const [label, body] of [
      ['unstreamed', MESSAGE],
      ['streamed', STREAMED],
    ] as const) {
      await compare({
        name: `gateway: ${label} messages, 8 at once, vs straight to the upstream`,
        a: { label: 'through the gateway', op: gateway(body) },
        b: { label: 'straight to the upstream', op: direct(body) },
        ratio: 'throughput',
        per: { ms: 1500, concurrency: 8 },
        aim: { atLeast: 0.9 },
      });
      slow = true;
      fx.fakes.anthropic.fail({ kind: 'slow', ms: UPSTREAM_MS });
      await compare({
        name: `gateway: ${label} messages, 8 at once, upstream answering in ${UPSTREAM_MS} ms`,
        a: { label: 'through the gateway', op: gateway(body) },
        b: { label: 'straight to the upstream', op: direct(body) },
        ratio: 'throughput',
        per: { ms: 1500, concurrency: 8 },
        aim: { atLeast: 0.9 },
      });
      slow = false;
      fx.fakes.anthropic.clearFaults();
      // Added latency, one request at a time: interleaved samples, so drift hits both alike.
      const through: number[] = [];
      const straight: number[] = [];
      for (let i = 0; i < LATENCY_SAMPLES; i++) {
        for (const [op, into] of i % 2 === 0
          ? ([
              [gateway(body), through],
              [direct(body), straight],
            ] as const)
          : ([
              [direct(body), straight],
              [gateway(body), through],
            ] as const)) {
          const started = performance.now();
          await op();
          into.push(performance.now() - started);
        }
      }
      const added = (p: number) => (percentile(through, p) - percentile(straight, p)).toFixed(2);
      console.log(
        `gateway: ${label}, one at a time: added p50 ${added(50)} ms (aim < 1 ms), p99 ${added(99)} ms; ` +
          `median ${median(through).toFixed(2)} ms through the gateway, ${median(straight).toFixed(2)} ms straight`,
      );
    }
  } finally {
    keepAlive.destroy();
    await fx.close();
  }
}
