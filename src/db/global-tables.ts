// The only tables allowed to exist without row-level security (TEN-6). Each
// says why it holds no tenant's data, or, where it names a tenant
// (`tenantColumn`), why it must be read before any tenant is known. Anything
// else without ENABLE + FORCE RLS and a tenant policy fails the RLS gate test
// and `enclave doctor`.

export interface GlobalTable {
  readonly reason: string;
  /** Present only if the table has a tenant_id column: why that is not tenant data behind RLS. */
  readonly tenantColumn?: string;
}

export const GLOBAL_TABLES: Readonly<Record<string, GlobalTable>> = {
  'enclave.schema_migrations': {
    reason: 'migration ledger: version numbers and checksums, written by the owner role at start',
  },
  'enclave.worker_heartbeats': { reason: 'liveness of worker processes, which serve every tenant' },
  'enclave.recovery_requests': {
    reason: 'a recovery request may match no account, and gets a support reference all the same',
  },
  'enclave.rate_limits': {
    reason: 'rate-limit counters keyed by client address or a hash of the login tried',
  },
  'enclave.identity_flows': {
    reason:
      'a provider sign-in in flight (ACC-9) starts before any tenant is known: hashes of its state and browser secret, the provider, an invite hash, and (for linking) the user asking; used once, 10 minutes',
  },
  'enclave.dev_outbox': {
    reason: 'development-only mail outbox shown at /dev/mail; never written in production',
  },
  'enclave.checkpoint_leaves': {
    reason:
      'the checkpoint log (AUD-4): an append-only Merkle tree whose leaves commit to every tenant’s chain head; written only by checkpoint_append_leaves()',
    tenantColumn:
      'the log commits to every tenant’s head so each tenant can get an inclusion proof; a leaf reveals only a head hash and an event count',
  },
  'enclave.checkpoint_nodes': {
    reason:
      'the checkpoint log’s subtree hashes (AUD-4), derived from checkpoint_leaves and written only by checkpoint_append_leaves(); served publicly as tlog tiles',
  },
  'enclave.checkpoint_tenant_heads': {
    reason:
      'each tenant’s newest checkpoint leaf (AUD-8): the head map every checkpoint signs; written only by checkpoint_append_leaves()',
    tenantColumn:
      'the head map commits to every tenant’s head so no tenant’s leaves can be hidden; an entry holds what its leaf already holds',
  },
  'enclave.checkpoints': {
    reason:
      'signed checkpoints (tree size, root, C2SP note) of the global checkpoint log, published to everyone',
  },
  'enclave.vault_master_keys': {
    reason:
      'which master-key versions wrap data keys, with a canary wrapped under each (VLT-6); no tenant data, no key material',
  },
  'enclave.passkey_challenges': {
    reason:
      'WebAuthn challenges: a random value and the hash of what it is bound to (a session, a browser cookie, a sign-in challenge); a passwordless sign-in asks for one before any account or tenant is known',
  },
  'enclave.posture_runs': {
    reason:
      'results of the platform’s verifier runs (OPS-5), published on /security; a run names at most the tenant and seq where a chain failed',
  },
  'enclave.backup_drills': {
    reason:
      'outcomes of `enclave drill` (OPS-4), which restores every tenant at once; check lines carry counts, at most a failing tenant id',
  },
  'graphile_worker.migrations': { reason: 'the job queue library’s own schema version' },
  'graphile_worker._private_jobs': {
    reason: 'job queue shared by every tenant (OPS-2); payloads carry ids, never secrets',
  },
  'graphile_worker._private_job_queues': { reason: 'named job queues of the shared job queue' },
  'graphile_worker._private_tasks': { reason: 'task identifiers known to the shared job queue' },
  'graphile_worker._private_known_crontabs': { reason: 'last run times of platform cron tasks' },
};
