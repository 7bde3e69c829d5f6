-- Inbound webhooks (RLY-11): endpoints through which an outside service (a CI
-- system, a chat app) sends Standard Webhooks-signed events to an agent, and
-- the events received, each once per webhook-id.
--
-- No secret is stored. An endpoint's `whsec_` secret is derived from the
-- server's key and the endpoint's random `secret_salt` (src/webhooks/inbound.ts),
-- so a copy of this table alone signs nothing.
--
-- POST /hooks/:endpoint_id arrives with no principal and no tenant:
-- enclave.inbound_webhook_endpoint below finds the endpoint by id, and reading
-- it is the request's only database access until its signature checks out.

create table inbound_webhooks (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  agent_id uuid not null,
  description text not null check (length(description) <= 200),
  secret_salt bytea not null check (length(secret_salt) = 16),
  created_by uuid,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (id),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index inbound_webhooks_agent on inbound_webhooks (tenant_id, agent_id, created_at, id);
alter table inbound_webhooks enable row level security;
alter table inbound_webhooks force row level security;
create policy tenant_isolation on inbound_webhooks
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, delete on inbound_webhooks to enclave_app;
-- enclave.inbound_webhook_endpoint reads an endpoint by id before any tenant is bound.
create policy inbound_webhooks_definer on inbound_webhooks for select to enclave_owner using (true);

create function enclave.inbound_webhook_endpoint(p_id uuid)
  returns table (tenant_id uuid, agent_id uuid, secret_salt bytea)
  language sql stable security definer set search_path = enclave, pg_temp
  as $$ select tenant_id, agent_id, secret_salt from inbound_webhooks where id = p_id $$;
revoke all on function enclave.inbound_webhook_endpoint(uuid) from public;
grant execute on function enclave.inbound_webhook_endpoint(uuid) to enclave_app;

create table inbound_webhook_events (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  endpoint_id uuid not null,
  -- The sender's webhook-id: the replay key (one event per id and endpoint).
  webhook_id text not null check (length(webhook_id) between 1 and 256),
  body text not null check (octet_length(body) <= 65536),
  -- queued (waits for the agent's instance), delivered (2xx), failed (the agent refused it).
  delivery text not null default 'queued' check (delivery in ('queued', 'delivered', 'failed')),
  received_at timestamptz not null default now(),
  delivered_at timestamptz,
  primary key (tenant_id, id),
  unique (endpoint_id, webhook_id),
  foreign key (tenant_id, endpoint_id) references inbound_webhooks (tenant_id, id) on delete cascade
);
alter table inbound_webhook_events enable row level security;
alter table inbound_webhook_events force row level security;
create policy tenant_isolation on inbound_webhook_events
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update on inbound_webhook_events to enclave_app;
