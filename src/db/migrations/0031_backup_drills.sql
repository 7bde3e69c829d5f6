-- The outcome of each `enclave drill` (OPS-4, src/backup/drill.ts): when it
-- ran, whether the restored copy passed every check, and each check's one
-- line. The posture page (OPS-5) shows the latest. Platform-wide: a drill
-- restores every tenant at once, and a check line names counts, a table or
-- at most the first failing tenant's id, never its data.
create table backup_drills (
  id bigint generated always as identity primary key,
  started_at timestamptz not null,
  finished_at timestamptz not null check (finished_at >= started_at),
  ok boolean not null,
  checks jsonb not null check (jsonb_typeof(checks) = 'array')
);
create index backup_drills_latest on backup_drills (finished_at desc);
grant select, insert on backup_drills to enclave_app;
