-- Relay retention (RLY-9): the hourly `relay_retention` job deletes message
-- payloads 30 days after creation, expired thread tokens and expired
-- idempotency keys (src/relay/retention.ts). The deleting runs per tenant,
-- through serviceQuery under that tenant's RLS; only finding which tenants
-- have anything due crosses tenants, here, and returns ids alone.
--
-- FORCE RLS binds the owner too: these read-only policies for enclave_owner
-- apply only inside the SECURITY DEFINER function below (see 0004_checkpoints.sql).
create policy relay_messages_definer on relay_messages for select to enclave_owner using (true);
create policy relay_thread_tokens_definer on relay_thread_tokens for select to enclave_owner using (true);
create policy idempotency_keys_definer on idempotency_keys for select to enclave_owner using (true);

-- Tenants with a payload created before p_payload_cutoff, or a thread token
-- or idempotency key expired at p_now. The three tables' tenants are walked
-- together as a skip scan over their (tenant_id, ...) indexes
-- (relay_messages_retention holds only live payloads): each step is one index
-- probe per table for the next tenant id (least() skips a table that has no
-- more), then one probe per table for a due row of that tenant. The probes are
-- scalar subqueries with a limit, which the planner cannot turn into a join
-- that reads a whole index, so a run never reads the rows not yet due.
create function enclave.relay_retention_tenants(p_payload_cutoff timestamptz, p_now timestamptz)
  returns setof uuid
  language sql stable security definer set search_path = enclave, pg_temp
  as $$
    with recursive tenants (tenant_id) as (
      select least(
        (select m.tenant_id from relay_messages m where m.body is not null order by m.tenant_id limit 1),
        (select t.tenant_id from relay_thread_tokens t order by t.tenant_id limit 1),
        (select k.tenant_id from idempotency_keys k order by k.tenant_id limit 1))
      union all
      select least(
        (select m.tenant_id from relay_messages m
         where m.body is not null and m.tenant_id > p.tenant_id order by m.tenant_id limit 1),
        (select t.tenant_id from relay_thread_tokens t where t.tenant_id > p.tenant_id order by t.tenant_id limit 1),
        (select k.tenant_id from idempotency_keys k where k.tenant_id > p.tenant_id order by k.tenant_id limit 1))
      from tenants p where p.tenant_id is not null
    )
    select p.tenant_id from tenants p
    where (select true from relay_messages m
           where m.tenant_id = p.tenant_id and m.body is not null and m.created_at < p_payload_cutoff limit 1)
       or (select true from relay_thread_tokens t where t.tenant_id = p.tenant_id and t.expires_at <= p_now limit 1)
       or (select true from idempotency_keys k where k.tenant_id = p.tenant_id and k.expires_at <= p_now limit 1)
  $$;
revoke all on function enclave.relay_retention_tenants(timestamptz, timestamptz) from public;
grant execute on function enclave.relay_retention_tenants(timestamptz, timestamptz) to enclave_app;
