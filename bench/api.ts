import Fastify from 'fastify';
import { resolveApiToken } from '../src/accounts/api-tokens.ts';
import { CURRENT_PARAMS, hashPasswordSync } from '../src/accounts/passwords.ts';
import { createAccount } from '../test/helpers/accounts.ts';
import { buildTestApp } from '../test/helpers/app.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare, median } from './ab.ts';

// `npm run bench -- api`: what signing in and an authenticated read cost.
// scrypt milliseconds per hash at the current parameters (an absolute figure,
// for the README), then GET /api/v1/me (through app.inject) with a Bearer
// token — token lookup, tenant binding, user check — against a bare Fastify
// route (its own instance, no hooks, no schemas, also through inject) that
// runs the same transaction on the same app pool (resolveApiToken on db.app)
// and returns the user: what the app adds to the database work.

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

  // The production app: without the tests' OpenAPI conformance check on every response.
  const testApp = await buildTestApp(db, {}, { openApiConformance: false, passwordCost: 'production' });
  try {
    const account = await createAccount(db, testApp);
    const authorization = `Bearer ${account.apiToken}`;
    const bare = Fastify();
    bare.get('/me', async (request, reply) => {
      const token = (request.headers.authorization ?? '').slice('Bearer '.length);
      const found = await resolveApiToken(db.app, token);
      if (found === undefined) return reply.code(401).send();
      return { ...found.user, authenticated_by: 'token' };
    });
    await bare.ready();
    try {
      await compare({
        name: 'authenticated GET /api/v1/me vs a bare route doing the same transaction',
        ratio: 'throughput',
        per: { ms: 700 },
        // Twelve short rounds rather than six: on a loaded 2-core machine one neighbour's burst moves a round a lot.
        rounds: 12,
        aim: { atLeast: 0.8 },
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
          label: 'a bare Fastify route: the same token lookup and user select on db.app',
          op: async () => {
            const response = await bare.inject({ method: 'GET', url: '/me', headers: { authorization } });
            if (response.statusCode !== 200) throw new Error(`bare: ${response.statusCode}`);
          },
        },
      });
    } finally {
      await bare.close();
    }
  } finally {
    await testApp.app.close();
  }
}
