import { spawn } from 'node:child_process';
import { startTestCluster } from './helpers/cluster.ts';

// `npm test`: one PostgreSQL cluster for the whole run, a migrated template,
// then node's test runner over every *.test.ts (or the files given as
// arguments). The cluster and its directory are removed afterwards, also
// when tests fail or the run is interrupted.

const DEFAULT_PATTERNS = ['src/**/*.test.ts', 'test/**/*.test.ts'];
const concurrency = process.env.ENCLAVE_TEST_CONCURRENCY ?? '3';

const files = process.argv.slice(2);
const cluster = await startTestCluster();
const child = spawn(
  process.execPath,
  ['--test', `--test-concurrency=${concurrency}`, ...(files.length > 0 ? files : DEFAULT_PATTERNS)],
  { stdio: 'inherit', env: { ...process.env, ENCLAVE_TEST_CLUSTER: JSON.stringify(cluster.info) } },
);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => child.kill(signal));
}
const code = await new Promise<number>((resolve) => {
  child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal === null ? 1 : 128 + 2)));
});
await cluster.stop();
process.exit(code);
