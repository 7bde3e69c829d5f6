-- Callbacks (RLY-7): endpoints a tenant registers for relay thread events,
-- the deliveries made to them, and every attempt of each delivery.
--
-- An endpoint listens on one side of the relay:
--   * agent_id:      the owner's side, events of every thread with that agent;
--   * connection_id: the caller's side, events of the threads opened over
--                    that (outgoing) connection of this tenant.
-- A thread event happens in the target's tenant. Its transaction enqueues one
-- `callback_fanout` job whose key is the event's id (OPS-2); that job creates
-- the deliveries in each tenant with an endpoint for the event (through
-- serviceQuery, TEN-5), each with its own `callback_deliver` job.
--
-- As with inbound webhooks (0023), no secret is stored: an endpoint's
-- `whsec_` secret (and, for v1a, its Ed25519 key) is derived from the
-- server's key and the endpoint's random salt. During a rotation the previous
-- salt stays valid until previous_salt_until, and both signatures are sent.

create table callback_endpoints (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  agent_id uuid,
  connection_id uuid,
  url text not null check (length(url) between 1 and 2000),
  description text not null default '' check (length(description) <= 200),
  event_types text[] not null check (
    cardinality(event_types) between 1 and 4
    and event_types <@ array['thread.message_received', 'thread.agent_replied', 'thread.closed',
                             'connection.revoked']::text[]),
  secret_salt bytea not null check (length(secret_salt) = 16),
  previous_salt bytea check (length(previous_salt) = 16),
  previous_salt_until timestamptz,
  -- Also sign with Ed25519 (v1a); the public key is shown with the endpoint.
  sign_v1a boolean not null default false,
  state text not null default 'enabled' check (state in ('enabled', 'disabled')),
  disabled_reason text check (length(disabled_reason) <= 500),
  -- Deliveries in a row that ended failed; reset by a success.
  consecutive_failures integer not null default 0 check (consecutive_failures >= 0),
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (id),
  check ((agent_id is null) <> (connection_id is null)),
  check ((previous_salt is null) = (previous_salt_until is null)),
  check ((state = 'disabled') = (disabled_reason is not null)),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade,
  foreign key (tenant_id, connection_id) references relay_connections (tenant_id, id) on delete cascade
);
create index callback_endpoints_page on callback_endpoints (tenant_id, created_at, id);
create index callback_endpoints_agent on callback_endpoints (tenant_id, agent_id) where agent_id is not null;
create index callback_endpoints_connection on callback_endpoints (tenant_id, connection_id)
  where connection_id is not null;
alter table callback_endpoints enable row level security;
alter table callback_endpoints force row level security;
create policy tenant_isolation on callback_endpoints
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on callback_endpoints to enclave_app;

create table callback_deliveries (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  endpoint_id uuid not null,
  -- The thread event (its id is the fan-out job's key); one delivery per event and endpoint.
  event_id uuid not null,
  event_type text not null,
  -- The webhook-id header: the same on every attempt and replay, so a receiver dedupes on it.
  webhook_id text not null check (length(webhook_id) between 1 and 100),
  -- The exact body signed and sent.
  payload text not null check (octet_length(payload) <= 65536),
  state text not null default 'pending' check (state in ('pending', 'succeeded', 'failed')),
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz,
  last_status integer,
  created_at timestamptz not null default now(),
  finished_at timestamptz,
  primary key (tenant_id, id),
  unique (id),
  unique (endpoint_id, event_id),
  unique (tenant_id, webhook_id),
  foreign key (tenant_id, endpoint_id) references callback_endpoints (tenant_id, id) on delete cascade,
  check ((state = 'pending') = (finished_at is null))
);
create index callback_deliveries_page on callback_deliveries (tenant_id, endpoint_id, created_at, id);
create index callback_deliveries_failed on callback_deliveries (tenant_id, endpoint_id, finished_at)
  where state = 'failed';
-- /status reads the last day's outcomes (a definer count, no tenant data).
create index callback_deliveries_finished on callback_deliveries (finished_at) where finished_at is not null;
alter table callback_deliveries enable row level security;
alter table callback_deliveries force row level security;
create policy tenant_isolation on callback_deliveries
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update on callback_deliveries to enclave_app;

create table callback_attempts (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  delivery_id uuid not null,
  -- 1, 2, … within the delivery (a replay continues the count).
  number integer not null check (number > 0),
  attempted_at timestamptz not null default now(),
  -- The answer's status; null when none came (error says why).
  status integer check (status between 100 and 599),
  latency_ms integer not null check (latency_ms >= 0),
  -- timeout, refused, dns, forbidden_destination, too_large, tls, … (src/callbacks/send.ts).
  error text check (length(error) <= 100),
  -- The first 1 KB of the answer, for the owner's delivery log.
  response_prefix text check (octet_length(response_prefix) <= 1024),
  primary key (tenant_id, id),
  unique (delivery_id, number),
  foreign key (tenant_id, delivery_id) references callback_deliveries (tenant_id, id) on delete cascade
);
alter table callback_attempts enable row level security;
alter table callback_attempts force row level security;
create policy tenant_isolation on callback_attempts
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert on callback_attempts to enclave_app;

-- The public status page's callback figures (RLY-10): how many deliveries
-- ended succeeded and failed since p_since, platform-wide. Counts alone leave
-- the function; it reads through the owner's read-only policy below.
create policy callback_deliveries_definer on callback_deliveries for select to enclave_owner using (true);
create function enclave.status_callback_outcomes(p_since timestamptz)
  returns table (succeeded bigint, failed bigint)
  language sql stable security definer set search_path = enclave, pg_temp
  as $$
    select count(*) filter (where state = 'succeeded'), count(*) filter (where state = 'failed')
    from callback_deliveries where finished_at >= p_since
  $$;
revoke all on function enclave.status_callback_outcomes(timestamptz) from public;
grant execute on function enclave.status_callback_outcomes(timestamptz) to enclave_app;
