import { startTestCluster } from '../test/helpers/cluster.ts';
import { createTestDatabase, type TestDatabase } from '../test/helpers/database.ts';
import { printSummary } from './ab.ts';
import { runApiBench } from './api.ts';
import { runAuditBench } from './audit.ts';
import { runCallbackEventsBench } from './callback-events.ts';
import { runCallbacksBench } from './callbacks.ts';
import { runCheckpointBench } from './checkpoint.ts';
import { runColdStartBench } from './cold-start.ts';
import { runEgressBench } from './egress.ts';
import { runGatewayBench } from './gateway.ts';
import { runIngressBench } from './ingress.ts';
import { runListsBench } from './lists.ts';
import { runLoginStormBench } from './login-storm.ts';
import { runRelayBench } from './relay.ts';
import { runRelayDeliveryBench } from './relay-delivery.ts';
import { runStatusBench } from './status.ts';
import { runTenancyBench } from './tenancy.ts';
import { runVaultBench } from './vault.ts';

// `npm run bench [-- NAME ...]`: every scenario, or the named ones, on one
// embedded cluster and one database. Each states its costs as ratios against
// a baseline run in the same process, in interleaved rounds (bench/ab.ts);
// the run ends with a table of every ratio against its aim.

const scenarios: Record<string, (db: TestDatabase) => Promise<unknown>> = {
  tenancy: runTenancyBench,
  api: runApiBench,
  audit: runAuditBench,
  checkpoint: () => runCheckpointBench(),
  vault: runVaultBench,
  ingress: runIngressBench,
  egress: runEgressBench,
  'cold-start': runColdStartBench,
  lists: runListsBench,
  'login-storm': runLoginStormBench,
  gateway: () => runGatewayBench(),
  'relay-delivery': runRelayDeliveryBench,
  relay: runRelayBench,
  status: runStatusBench,
  'callback-events': runCallbackEventsBench,
  callbacks: runCallbacksBench,
};

const asked = process.argv.slice(2);
const unknown = asked.filter((name) => !(name in scenarios));
if (unknown.length > 0) {
  console.error(
    `npm run bench: no scenario ${unknown.join(', ')}; the scenarios are ${Object.keys(scenarios).join(', ')}`,
  );
  process.exit(2);
}

const cluster = await startTestCluster();
process.env.ENCLAVE_TEST_CLUSTER = JSON.stringify(cluster.info);
const db = await createTestDatabase().catch(async (error: unknown) => {
  await cluster.stop();
  throw error;
});
try {
  for (const [name, run] of Object.entries(scenarios)) {
    if (asked.length === 0 || asked.includes(name)) await run(db);
  }
  printSummary();
} finally {
  await db.drop();
  await cluster.stop();
}
