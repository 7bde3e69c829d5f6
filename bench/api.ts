import { CURRENT_PARAMS, hashPasswordSync } from '../src/accounts/passwords.ts';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare, median } from './ab.ts';

// `npm run bench -- api`: what signing in and an authenticated read cost.
// scrypt milliseconds per hash at the current parameters (an absolute figure,
// for the README), then GET /api/v1/me (through app.inject) with a Bearer
// token — token lookup, tenant binding, user check — against the same route
// without credentials (401 from the same hook, no database work).

const SCRYPT_RUNS = 5;

export async function runApiBench(db: TestDatabase): Promise<void> {
  const { ln, r, p } = CURRENT_PARAMS;
  hashPasswordSync('warm-up password');
  const scryptMs: number[] = [];
  for (let i = 0; i < SCRYPT_RUNS; i += 1) {
    const started = performance.now();
    hashPasswordSync(`bench password ${i}`);
    scryptMs.push(performance.now() - started);
  }
  console.log(
    `\nscrypt (N=2^${ln}, r=${r}, p=${p}): ${median(scryptMs).toFixed(0)} ms per hash, median of ${SCRYPT_RUNS} ` +
      `(min ${Math.min(...scryptMs).toFixed(0)}, max ${Math.max(...scryptMs).toFixed(0)})`,
  );

  const testApp = await buildTestApp(db);
  try {
    const account = await createAccount(db, testApp);
    const authorization = `Bearer ${account.apiToken}`;
    await compare({
      name: 'authenticated read vs an unauthenticated one',
      ratio: 'throughput',
      per: { ms: 700 },
      a: {
        label: 'GET /api/v1/me with a Bearer token (200)',
        op: async () => {
          const response = await testApp.app.inject({
            method: 'GET',
            url: '/api/v1/me',
            headers: { authorization },
          });
          if (response.statusCode !== 200) throw new Error(`authenticated: ${response.statusCode}`);
        },
      },
      b: {
        label: 'GET /api/v1/me without credentials (401)',
        op: async () => {
          const response = await testApp.app.inject({ method: 'GET', url: '/api/v1/me' });
          if (response.statusCode !== 401) throw new Error(`unauthenticated: ${response.statusCode}`);
        },
      },
    });
  } finally {
    await testApp.app.close();
  }
}
