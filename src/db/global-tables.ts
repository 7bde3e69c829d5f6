// The only tables allowed to exist without row-level security (TEN-6). Each
// holds no tenant's data, and says why here. Anything else without ENABLE +
// FORCE RLS and a policy fails the RLS gate test and `enclave doctor`.
export const GLOBAL_TABLES: Readonly<Record<string, string>> = {
  'enclave.schema_migrations':
    'migration ledger: version numbers and checksums, written by the owner role at start',
  'enclave.worker_heartbeats': 'liveness of worker processes, which serve every tenant',
  'graphile_worker.migrations': 'the job queue library’s own schema version',
  'graphile_worker._private_jobs':
    'job queue shared by every tenant (OPS-2); payloads carry ids, never secrets',
  'graphile_worker._private_job_queues': 'named job queues of the shared job queue',
  'graphile_worker._private_tasks': 'task identifiers known to the shared job queue',
  'graphile_worker._private_known_crontabs': 'last run times of platform cron tasks',
};
