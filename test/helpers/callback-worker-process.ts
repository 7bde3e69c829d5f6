import { Writable } from 'node:stream';
import { createCallbackDelivery } from '../../src/callbacks/deliver.ts';
import { createCallbackRules } from '../../src/callbacks/destination.ts';
import { type Credentials, connect, type DbTarget } from '../../src/db/target.ts';
import { createOutboxMailer } from '../../src/email/mailer.ts';
import { startWorker } from '../../src/jobs/worker.ts';
import { createLogger } from '../../src/logger.ts';
import { testAuditSetup } from './audit.ts';

// A worker process that sends callbacks, for the test that kills it with
// SIGKILL mid-attempt (src/callbacks/deliver-worker.test.ts). Its database
// and session key come in CALLBACK_WORKER (JSON); it prints "ready" once it
// takes jobs, and runs until killed.

const { target, credentials, sessionKey } = JSON.parse(process.env.CALLBACK_WORKER ?? '{}') as {
  target: DbTarget;
  credentials: Credentials;
  sessionKey: string;
};
const sql = connect(target, credentials, { max: 4, timeoutMs: 5000 });
await startWorker({
  target,
  credentials,
  sql,
  logger: createLogger('warn', new Writable({ write: (_c, _e, done) => done() })),
  concurrency: 2,
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
process.stdout.write('ready\n');
