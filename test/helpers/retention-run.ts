// One retention pass in a process of its own, as the worker's daily job runs
// it, so a test can kill it with SIGKILL at a chosen point (AUD-7). The
// database, the archive and the connection's name (so the test can watch it
// wait) come from RETENTION_RUN, a JSON object.
import { createRetentionService } from '../../src/audit/retention.ts';
import { type Credentials, connect, type DbTarget } from '../../src/db/target.ts';
import { createLogger } from '../../src/logger.ts';

interface RunSettings {
  readonly target: DbTarget;
  readonly credentials: Credentials;
  readonly archiveDir: string;
  readonly name: string;
}

const settings = JSON.parse(process.env.RETENTION_RUN ?? '') as RunSettings;
const sql = connect(settings.target, settings.credentials, { max: 1, applicationName: settings.name });
await createRetentionService({
  sql,
  archiveDir: settings.archiveDir,
  hotDays: 90,
  coldMonths: 24,
  logger: createLogger('info'),
}).runRetention();
await sql.end();
