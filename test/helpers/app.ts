import { Writable } from 'node:stream';
import { type Config, loadConfig } from '../../src/config.ts';
import { type App, buildApp } from '../../src/http/app.ts';
import { createLogger } from '../../src/logger.ts';
import type { TestDatabase } from './database.ts';

// Builds the real app against a test database, for app.inject(). Log lines
// are captured so tests can assert what reached the log.

export interface TestApp {
  readonly app: App;
  readonly config: Config;
  readonly logLines: () => string[];
}

export async function buildTestApp(db: TestDatabase, env: Record<string, string> = {}): Promise<TestApp> {
  const config = loadConfig({ ENCLAVE_DATA_DIR: '/nonexistent-enclave-test', ...env }, process.cwd());
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(
        ...chunk
          .toString('utf8')
          .split('\n')
          .filter((line) => line !== ''),
      );
      done();
    },
  });
  const app = await buildApp({
    config,
    sql: db.app,
    logger: createLogger('info', sink),
    migrations: db.migrations,
  });
  return { app, config, logLines: () => [...lines] };
}
