-- Posture (OPS-5): the results of the verifier runs shown on /security and
-- signed in /security.json, the platform's two probe tenants, and the
-- read-only, aggregate views across tenants that the verifiers need.

-- One row per verifier run. No tenant's data: a run's details name at most
-- the first tenant and seq whose chain failed, which the operator must see.
create table posture_runs (
  id uuid primary key default gen_random_uuid(),
  check_name text not null check (check_name ~ '^[a-z][a-z_]{1,39}$'),
  result text not null check (result in ('pass', 'failed', 'error')),
  started_at timestamptz not null,
  finished_at timestamptz not null,
  duration_ms integer not null check (duration_ms >= 0),
  details jsonb not null check (jsonb_typeof(details) = 'object')
);
create index posture_runs_latest on posture_runs (check_name, finished_at desc);
grant select, insert, delete on posture_runs to enclave_app;

-- The isolation probe's two tenants (OPS-5), made by the verifier,
-- idempotently, each with a row in a few tenant tables (an agent and rows
-- hanging off it: src/posture/probe-tenants.ts). No listing shows them because
-- nothing of theirs enters one: no users, no audit events (so no chain count
-- and no checkpoint leaf), no data keys, no agent instance, no published card
-- or directory listing. The one report that enumerates tenants themselves,
-- the backup drill's audit-chain count, leaves them out by this flag; backups
-- and their row counts include their rows.
alter table tenants add column probe boolean not null default false;

-- Every tenant with an audit chain, through audit_heads_definer (0004): the
-- chain-integrity verifier then reads each chain through serviceQuery.
create function enclave.posture_chain_tenants() returns setof uuid
  language sql stable security definer set search_path = enclave, pg_temp
  as $$ select h.tenant_id from audit_heads h where h.seq > 0 order by h.tenant_id $$;
revoke all on function enclave.posture_chain_tenants() from public;
grant execute on function enclave.posture_chain_tenants() to enclave_app;

-- Heads ahead of their newest checkpoint leaf: how many, and the time of the
-- oldest event no checkpoint commits to yet (each tenant bound in turn, as in
-- audit_archive_candidates()). Figures only: no tenant id leaves the function.
create function enclave.posture_unchecked_heads()
  returns table (tenants bigint, oldest_unchecked_at timestamptz)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  lagging record;
  candidate timestamptz;
begin
  tenants := 0;
  for lagging in
    select h.tenant_id, coalesce(p.seq, 0) as committed from audit_heads h
    left join checkpoint_tenant_heads p on p.tenant_id = h.tenant_id
    where h.seq > coalesce(p.seq, 0)
  loop
    tenants := tenants + 1;
    perform set_config('app.tenant_id', lagging.tenant_id::text, true);
    select e.occurred_at into candidate from audit_events e
      where e.tenant_id = lagging.tenant_id and e.seq = lagging.committed + 1;
    if candidate is not null and (oldest_unchecked_at is null or candidate < oldest_unchecked_at) then
      oldest_unchecked_at := candidate;
    end if;
  end loop;
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
  return next;
end $$;
revoke all on function enclave.posture_unchecked_heads() from public;
grant execute on function enclave.posture_unchecked_heads() to enclave_app;

-- The oldest event still in the database, over every tenant: its time alone.
-- Each tenant is bound in turn (the events' policy holds for the owner too),
-- as audit_archive_candidates() does, and the caller's binding restored.
create function enclave.posture_oldest_hot_event() returns timestamptz
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  t uuid;
  oldest timestamptz;
  candidate timestamptz;
begin
  for t in select h.tenant_id from audit_heads h where h.seq > 0 loop
    perform set_config('app.tenant_id', t::text, true);
    select e.occurred_at into candidate from audit_events e where e.tenant_id = t order by e.seq limit 1;
    if candidate is not null and (oldest is null or candidate < oldest) then
      oldest := candidate;
    end if;
  end loop;
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
  return oldest;
end $$;
revoke all on function enclave.posture_oldest_hot_event() from public;
grant execute on function enclave.posture_oldest_hot_event() to enclave_app;

-- One tenant's archive segments whose rows are gone (the file is then the
-- only copy), for the retention verifier to check against the files.
create function enclave.posture_archive_segments(p_tenant uuid)
  returns table (first_seq bigint, last_seq bigint, sha256 bytea, file text, last_ts timestamptz,
                 deleted_at timestamptz)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
begin
  perform set_config('app.tenant_id', p_tenant::text, true);
  return query
    select g.first_seq, g.last_seq, g.sha256, g.file, g.last_ts, g.deleted_at
    from audit_archive_segments g
    where g.tenant_id = p_tenant and g.rows_deleted_at is not null
    order by g.first_seq;
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
end $$;
revoke all on function enclave.posture_archive_segments(uuid) from public;
grant execute on function enclave.posture_archive_segments(uuid) to enclave_app;

-- Key hygiene in figures, through vault_data_keys_definer (0007): how many
-- data keys, the creation time of the oldest key that is still a tenant's
-- newest, and how many are wrapped under a master version older than the newest.
create function enclave.posture_data_keys()
  returns table (data_keys bigint, oldest_current_key_at timestamptz, wrapped_by_retired bigint)
  language sql stable security definer set search_path = enclave, pg_temp
  as $$
    select
      (select count(*) from vault_data_keys),
      (select min(newest.created_at) from (
         select distinct on (k.tenant_id) k.created_at from vault_data_keys k
         order by k.tenant_id, k.version desc) newest),
      (select count(*) from vault_data_keys k
       where k.master_version < (select max(m.version) from vault_master_keys m))
  $$;
revoke all on function enclave.posture_data_keys() from public;
grant execute on function enclave.posture_data_keys() to enclave_app;
