import type { WorkerEvents } from 'graphile-worker';
import { createEgressProxy } from '../../src/agents/egress/proxy.ts';
import { createBwrapDriver } from '../../src/agents/runtime/bwrap-driver.ts';
import { createLifecycle, type Lifecycle } from '../../src/agents/runtime/lifecycle.ts';
import type { Gateway } from '../../src/gateway/gateway.ts';
import { startWorker, type Worker } from '../../src/jobs/worker.ts';
import { createLogger } from '../../src/logger.ts';
import { createRelayDelivery } from '../../src/relay/delivery.ts';
import type { TestAppContext } from './app.ts';
import { testAuditSetup } from './audit.ts';

// The agent runtime as `enclave start` runs it beside the app, over the test
// database: sandboxed (bwrap) instances and relay delivery to them.

type Ctx = Pick<TestAppContext, 'db' | 'testApp'>;
const logger = createLogger('silent');

export interface TestLifecycleOptions {
  /** Networks the egress proxy lets instances reach (default: none). */
  readonly allow?: readonly string[];
  readonly gateway?: Pick<Gateway, 'listen'>;
  /** The operator's support public key (default: none offered). */
  readonly supportKey?: string;
  readonly backoffBaseMs?: number;
}

/** Starts and stops instances in bwrap sandboxes under the test app's instances directory. */
export function testLifecycle({ db, testApp }: Ctx, options: TestLifecycleOptions = {}): Lifecycle {
  return createLifecycle({
    sql: db.app,
    driver: createBwrapDriver({
      instancesDir: testApp.config.instancesDir,
      egress: createEgressProxy({ sql: db.app, logger, allow: [...(options.allow ?? [])] }),
      gateway: options.gateway,
      logger,
    }),
    templates: testApp.templates,
    vault: testApp.vault,
    supportKey: options.supportKey ?? '',
    logger,
    ...(options.backoffBaseMs === undefined ? {} : { backoffBaseMs: options.backoffBaseMs }),
  });
}

export interface TestWorkerOptions {
  readonly workerId: string;
  readonly lifecycle?: Lifecycle;
  readonly events?: WorkerEvents;
  readonly pollIntervalMs?: number;
}

/** A job worker with relay delivery to the instances' sockets (and `lifecycle`, when given). */
export function startTestWorker({ db, testApp }: Ctx, options: TestWorkerOptions): Promise<Worker> {
  return startWorker({
    target: db.target,
    credentials: db.appCredentials,
    sql: db.app,
    logger,
    concurrency: 2,
    mailer: { send: async () => undefined },
    publicUrl: testApp.config.publicUrl,
    audit: testAuditSetup(),
    relayDelivery: createRelayDelivery({
      sql: db.app,
      templates: testApp.templates,
      instancesDir: testApp.config.instancesDir,
      agentsDomain: testApp.config.agentsDomain,
      proto: 'http',
      logger,
    }),
    ...options,
  });
}
