import { Writable } from 'node:stream';
import { createCallbackDelivery } from '../../src/callbacks/deliver.ts';
import { createCallbackRules } from '../../src/callbacks/destination.ts';
import { type Credentials, connect, type DbTarget } from '../../src/db/target.ts';
import { createOutboxMailer } from '../../src/email/mailer.ts';
import { startWorker } from '../../src/jobs/worker.ts';
import { createLogger } from '../../src/logger.ts';
import { testAuditSetup } from './audit.ts';

// A worker process that sends callbacks, for the tests that kill it with
// SIGKILL or stop it with SIGTERM mid-attempt (src/callbacks/deliver-worker.test.ts).
// Its database, session key and concurrency come in CALLBACK_WORKER (JSON);
// it prints "ready" once it takes jobs. On SIGTERM it stops as `enclave
// worker` does (src/cli/main.ts): it prints "stopping", stops the worker
// (which lets the attempts under way finish), closes the database and exits 0.

const { target, credentials, sessionKey, concurrency } = JSON.parse(process.env.CALLBACK_WORKER ?? '{}') as {
  target: DbTarget;
  credentials: Credentials;
  sessionKey: string;
  concurrency?: number;
};
const sql = connect(target, credentials, { max: 4, timeoutMs: 5000 });
const worker = await startWorker({
  target,
  credentials,
  sql,
  logger: createLogger('warn', new Writable({ write: (_c, _e, done) => done() })),
  concurrency: concurrency ?? 2,
  workerId: `callback-worker-process-${process.pid}`,
  mailer: createOutboxMailer(sql),
  publicUrl: 'http://localhost:3000',
  audit: testAuditSetup(),
  pollIntervalMs: 100,
  callbackDelivery: createCallbackDelivery({
    sql,
    sessionKey,
    rules: createCallbackRules({ env: 'development', callbackAllow: ['127.0.0.1/32'] }),
    send: { timeoutMs: 120_000 },
  }),
});
process.once('SIGTERM', () => {
  process.stdout.write('stopping\n');
  void worker
    .stop()
    .then(() => sql.end())
    .then(() => process.exit(0));
});
process.stdout.write('ready\n');
