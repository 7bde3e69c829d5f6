import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare } from './ab.ts';

// `npm run bench -- status`: what a flood of GET /status.json costs (RLY-10).
// The report is cached for 5 s, so a flood should cost about what /healthz,
// which touches nothing, costs: the ratio is /status.json's throughput to
// /healthz's, both through app.inject on the production app, 8 at a time.

export async function runStatusBench(db: TestDatabase): Promise<void> {
  // The production app: without the tests' OpenAPI conformance check on every response.
  const testApp = await buildTestApp(db, {}, { openApiConformance: false, passwordCost: 'production' });
  const get = (url: string) => async () => {
    const response = await testApp.app.inject({ method: 'GET', url });
    if (response.statusCode !== 200) throw new Error(`${url}: ${response.statusCode}`);
  };
  try {
    await compare({
      name: 'GET /status.json (cached report) vs GET /healthz, 8 at a time',
      ratio: 'throughput',
      per: { ms: 700, concurrency: 8 },
      aim: { atLeast: 0.5 },
      a: { label: 'GET /status.json', op: get('/status.json') },
      b: { label: 'GET /healthz', op: get('/healthz') },
    });
  } finally {
    await testApp.app.close();
  }
}
