import type { Sql } from 'postgres';
import type { DrillCheck, DrillReport } from './drill.ts';

// The drills' outcomes in backup_drills (0031_backup_drills.sql), for the
// posture page (OPS-5): latestDrill() is what it shows.

export interface DrillRecord {
  readonly ok: boolean;
  readonly startedAt: Date;
  readonly finishedAt: Date;
  readonly checks: readonly DrillCheck[];
}

export async function recordDrill(app: Sql, report: DrillReport): Promise<void> {
  await app`
    insert into backup_drills (started_at, finished_at, ok, checks)
    values (${report.startedAt}, ${report.finishedAt}, ${report.ok}, ${app.json(report.checks.map((c) => ({ ...c })))})`;
}

/** The most recent drill, or undefined when none has run on this database. */
export async function latestDrill(sql: Sql): Promise<DrillRecord | undefined> {
  const [row] = await sql<{ ok: boolean; started_at: Date; finished_at: Date; checks: DrillCheck[] }[]>`
    select ok, started_at, finished_at, checks from backup_drills order by finished_at desc, id desc limit 1`;
  return row === undefined
    ? undefined
    : { ok: row.ok, startedAt: row.started_at, finishedAt: row.finished_at, checks: row.checks };
}
