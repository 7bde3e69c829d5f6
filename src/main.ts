import { type Config, type Env, loadConfig } from './config.ts';
import { type Database, openDatabase } from './db/database.ts';
import { type App, buildApp } from './http/app.ts';
import { defaultWorkerId } from './jobs/tasks.ts';
import { startWorker, type Worker } from './jobs/worker.ts';
import { createLogger, type Logger } from './logger.ts';

// Start-up in one place: config → database (embedded or external) → migrate
// → HTTP server and/or job worker. Stop runs the same steps backwards, so
// in-flight requests finish before the worker and the database go away.

export interface StartOptions {
  readonly env: Env;
  readonly cwd: string;
  readonly server: boolean;
  readonly worker: boolean;
  /** Where the human-facing lines (URL, start-up time) go. */
  readonly print: (line: string) => void;
}

export interface Enclave {
  readonly config: Config;
  readonly logger: Logger;
  readonly db: Database;
  readonly url: string | undefined;
  /** Settles if the worker dies on its own; start-up code treats that as fatal. */
  readonly workerDone: Promise<void>;
  stop(): Promise<void>;
}

export async function startEnclave(options: StartOptions): Promise<Enclave> {
  const started = performance.now();
  const config = loadConfig(options.env, options.cwd);
  const logger = createLogger(config.logLevel);
  const db = await openDatabase(config, options.env, { appPoolSize: options.server ? 20 : 5 });
  let app: App | undefined;
  let worker: Worker | undefined;
  const stop = async (): Promise<void> => {
    await app?.close();
    await worker?.stop();
    await db.close();
  };
  try {
    if (db.migrated.applied.length > 0) logger.info({ applied: db.migrated.applied }, 'migrations applied');
    if (options.worker) {
      worker = await startWorker({
        target: db.target,
        credentials: db.appCredentials,
        sql: db.app,
        logger,
        concurrency: config.workerConcurrency,
        workerId: defaultWorkerId(),
      });
    }
    let url: string | undefined;
    if (options.server) {
      app = await buildApp({ config, sql: db.app, logger, migrations: db.migrations });
      await app.listen({ host: config.host, port: config.port });
      url = config.publicUrl;
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const database =
      db.embedded === undefined ? 'external PostgreSQL' : `embedded PostgreSQL in ${config.dataDir}`;
    if (url !== undefined)
      options.print(`Enclave is running at ${url} (started in ${seconds} s, ${database})`);
    else options.print(`Enclave worker is running (started in ${seconds} s, ${database})`);
    return {
      config,
      logger,
      db,
      url,
      workerDone: worker?.done ?? new Promise<void>(() => {}),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
