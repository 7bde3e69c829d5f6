-- Relay retention (RLY-9) of the copies of relay text outside relay_messages:
-- a callback delivery's payload (the event's text as sent, 0025), the first
-- 1 KB of each attempt's answer (a receiver may echo the text back), and an
-- inbound webhook event's body (0023). The hourly `relay_retention` job
-- (src/relay/retention.ts) removes them 30 days after the delivery or event
-- was created, as it does message bodies; ids, times, states, statuses and
-- sizes stay, so the delivery log still shows that attempts happened and that
-- the payload expired.
--
-- A callback delivery still pending (its attempt series runs; the schedule
-- ends within about 18 hours, a replay starts a new one) keeps its payload
-- until it finishes: the job skips state = 'pending', so the next run after
-- the series ends removes it. A payload removed is never sent again: replay
-- refuses a delivery without one.

alter table callback_deliveries
  alter column payload drop not null,
  -- The payload's size, kept when it is removed (octet_length(payload) while it is there).
  add column payload_bytes integer check (payload_bytes between 0 and 65536),
  add column payload_deleted_at timestamptz,
  add constraint callback_deliveries_payload_expiry
    check ((payload is null) = (payload_deleted_at is not null) and (payload is null) = (payload_bytes is not null));
-- Finds a tenant's live payloads oldest first (and, for the skip scan below, the tenants that have any).
create index callback_deliveries_retention on callback_deliveries (tenant_id, created_at)
  where payload is not null;

-- The answers' excerpts go with their delivery's payload: the one column the app may change.
grant update (response_prefix) on callback_attempts to enclave_app;

alter table inbound_webhook_events
  alter column body drop not null,
  add column body_bytes integer check (body_bytes between 0 and 65536),
  add column payload_deleted_at timestamptz,
  add constraint inbound_webhook_events_payload_expiry
    check ((body is null) = (payload_deleted_at is not null) and (body is null) = (body_bytes is not null));
create index inbound_webhook_events_retention on inbound_webhook_events (tenant_id, received_at)
  where body is not null;
-- Read only inside enclave.relay_retention_tenants (SECURITY DEFINER), as 0021's policies are.
create policy inbound_webhook_events_definer on inbound_webhook_events for select to enclave_owner using (true);
-- callback_deliveries_definer (0025) already lets the owner read callback_deliveries.

-- 0021's function, now walking five tables: a tenant is due when it has a
-- message payload, a finished callback delivery's payload or an inbound
-- event's body created before p_payload_cutoff, or a thread token or
-- idempotency key expired at p_now. Same skip scan, same index probes.
create or replace function enclave.relay_retention_tenants(p_payload_cutoff timestamptz, p_now timestamptz)
  returns setof uuid
  language sql stable security definer set search_path = enclave, pg_temp
  as $$
    with recursive tenants (tenant_id) as (
      select least(
        (select m.tenant_id from relay_messages m where m.body is not null order by m.tenant_id limit 1),
        (select t.tenant_id from relay_thread_tokens t order by t.tenant_id limit 1),
        (select k.tenant_id from idempotency_keys k order by k.tenant_id limit 1),
        (select d.tenant_id from callback_deliveries d where d.payload is not null order by d.tenant_id limit 1),
        (select e.tenant_id from inbound_webhook_events e where e.body is not null order by e.tenant_id limit 1))
      union all
      select least(
        (select m.tenant_id from relay_messages m
         where m.body is not null and m.tenant_id > p.tenant_id order by m.tenant_id limit 1),
        (select t.tenant_id from relay_thread_tokens t where t.tenant_id > p.tenant_id order by t.tenant_id limit 1),
        (select k.tenant_id from idempotency_keys k where k.tenant_id > p.tenant_id order by k.tenant_id limit 1),
        (select d.tenant_id from callback_deliveries d
         where d.payload is not null and d.tenant_id > p.tenant_id order by d.tenant_id limit 1),
        (select e.tenant_id from inbound_webhook_events e
         where e.body is not null and e.tenant_id > p.tenant_id order by e.tenant_id limit 1))
      from tenants p where p.tenant_id is not null
    )
    select p.tenant_id from tenants p
    where (select true from relay_messages m
           where m.tenant_id = p.tenant_id and m.body is not null and m.created_at < p_payload_cutoff limit 1)
       or (select true from relay_thread_tokens t where t.tenant_id = p.tenant_id and t.expires_at <= p_now limit 1)
       or (select true from idempotency_keys k where k.tenant_id = p.tenant_id and k.expires_at <= p_now limit 1)
       or (select true from callback_deliveries d
           where d.tenant_id = p.tenant_id and d.payload is not null and d.created_at < p_payload_cutoff
             and d.state <> 'pending' limit 1)
       or (select true from inbound_webhook_events e
           where e.tenant_id = p.tenant_id and e.body is not null and e.received_at < p_payload_cutoff limit 1)
  $$;
