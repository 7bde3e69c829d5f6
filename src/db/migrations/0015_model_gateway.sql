-- The model gateway (AGT-7, VLT-5): an agent calls Anthropic, OpenAI, Google
-- AI or xAI through its instance's gateway socket with its own identity, and
-- the gateway lends the tenant's key for that one upstream call
-- (src/gateway/). Here: the per-agent limits, one row per call, a per-day
-- rollup that the limits and the usage view read at constant cost, and the
-- hours in which each provider's key was used (one audit event each).

-- Limits the tenant sets per agent; null means no limit.
alter table agents
  add column model_requests_per_minute integer check (model_requests_per_minute between 1 and 100000),
  add column model_tokens_per_day bigint check (model_tokens_per_day between 1 and 1000000000000);

-- One row per call that reached the upstream (refusals before it are not calls).
-- Token counts are the provider's own `usage` fields; null when the answer
-- carried none (a failed call, a stream cut short, a stream that asked for none).
create table gateway_calls (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  agent_id uuid not null,
  provider text not null check (provider in ('anthropic', 'openai', 'google', 'xai')),
  -- What the agent asked for, checked against the provider's model names before the call.
  model text not null check (length(model) between 1 and 128),
  -- The upstream's status; 0 when it never answered (unreachable, timed out, aborted).
  status integer not null check (status between 0 and 599),
  input_tokens bigint check (input_tokens >= 0),
  output_tokens bigint check (output_tokens >= 0),
  latency_ms integer not null check (latency_ms >= 0),
  streamed boolean not null,
  created_at timestamptz not null default now(),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index gateway_calls_agent_page on gateway_calls (tenant_id, agent_id, created_at desc, id desc);
alter table gateway_calls enable row level security;
alter table gateway_calls force row level security;
create policy tenant_isolation on gateway_calls
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, delete on gateway_calls to enclave_app;

-- Per agent, UTC day, provider and model: written with each batch of calls,
-- so the tokens-per-day limit and the usage view read a handful of rows
-- however many calls a day brings.
create table gateway_usage_daily (
  tenant_id uuid not null,
  agent_id uuid not null,
  day date not null,
  provider text not null check (provider in ('anthropic', 'openai', 'google', 'xai')),
  model text not null check (length(model) between 1 and 128),
  requests bigint not null default 0 check (requests >= 0),
  failed bigint not null default 0 check (failed >= 0),
  input_tokens bigint not null default 0 check (input_tokens >= 0),
  output_tokens bigint not null default 0 check (output_tokens >= 0),
  primary key (tenant_id, agent_id, day, provider, model),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
alter table gateway_usage_daily enable row level security;
alter table gateway_usage_daily force row level security;
create policy tenant_isolation on gateway_usage_daily
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on gateway_usage_daily to enclave_app;

-- The first call of each hour per agent and provider appends gateway.key_used
-- to the tenant's audit chain; this row is what makes it the first, across
-- every worker process and restart.
create table gateway_key_hours (
  tenant_id uuid not null,
  agent_id uuid not null,
  provider text not null check (provider in ('anthropic', 'openai', 'google', 'xai')),
  hour timestamptz not null check (date_trunc('hour', hour) = hour),
  primary key (tenant_id, agent_id, provider, hour),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
alter table gateway_key_hours enable row level security;
alter table gateway_key_hours force row level security;
create policy tenant_isolation on gateway_key_hours
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, delete on gateway_key_hours to enclave_app;

-- The gateway reads the key for every call, so the read is one statement of
-- its own, bound to its tenant the way withTenant binds a transaction: this
-- function sets app.tenant_id (transaction-local, so for this one statement
-- when it runs alone) before its query, and the tenant policies then show
-- that tenant's rows only. One round trip, where begin, bind-and-read and
-- commit take three. It runs as its caller (enclave_app, under every policy)
-- and refuses to rebind a transaction already bound to another tenant.
create function enclave.credential_sealed(p_tenant uuid, p_agent uuid, p_name text)
  returns table (ciphertext bytea, nonce bytea, tag bytea, key_version integer, master_version integer, wrapped bytea)
  language plpgsql volatile set search_path = enclave, pg_temp
  as $$
begin
  if p_tenant is null then
    raise exception 'credential_sealed needs a tenant';
  end if;
  if enclave.current_tenant_id() is distinct from null and enclave.current_tenant_id() <> p_tenant then
    raise exception 'credential_sealed: this transaction is bound to another tenant';
  end if;
  perform set_config('app.tenant_id', p_tenant::text, true);
  return query
    select c.ciphertext, c.nonce, c.tag, c.key_version, k.master_version, k.wrapped
    from credentials c
    join vault_data_keys k on k.tenant_id = c.tenant_id and k.version = c.key_version
    where c.agent_id = p_agent and c.name = p_name;
end $$;
revoke all on function enclave.credential_sealed(uuid, uuid, text) from public;
grant execute on function enclave.credential_sealed(uuid, uuid, text) to enclave_app;
