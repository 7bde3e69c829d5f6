-- The agent runtime (AGT-2…AGT-6): one instance per agent, its state as the
-- lifecycle jobs see it, the egress proxy's connection records and support
-- sessions.

-- Optional per-agent egress allowlist (AGT-4): null means any public destination.
alter table agents add column egress_allowlist text[]
  check (egress_allowlist is null or cardinality(egress_allowlist) <= 100);

create table agent_instances (
  agent_id uuid primary key,
  tenant_id uuid not null,
  -- AGT-3: 2-character template prefix + 8 random [a-z0-9], unguessable, platform-wide unique.
  subdomain text not null unique check (subdomain ~ '^[a-z0-9]{10}$'),
  desired_state text not null default 'stopped' check (desired_state in ('running', 'stopped')),
  state text not null default 'stopped'
    check (state in ('stopped', 'starting', 'running', 'crashed', 'stopping')),
  -- Why it is stopped or crashed, in words for its owner: never a credential.
  state_reason text check (length(state_reason) <= 500),
  -- Consecutive crashes since it last ran long enough; restarts back off on it.
  crashes integer not null default 0 check (crashes >= 0),
  started_at timestamptz,
  updated_at timestamptz not null default now(),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
alter table agent_instances enable row level security;
alter table agent_instances force row level security;
create policy tenant_isolation on agent_instances
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
-- The ingress finds the instance a request's Host names before it knows the tenant.
create policy agent_instances_subdomain_lookup on agent_instances for select
  using (subdomain = enclave.current_lookup());
grant select, insert, update, delete on agent_instances to enclave_app;

-- AGT-4: every connection an agent made or tried through its egress proxy.
create table egress_connections (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  agent_id uuid not null,
  host text not null check (length(host) between 1 and 253),
  port integer not null check (port between 0 and 65535),
  method text not null check (method in ('CONNECT', 'HTTP')),
  allowed boolean not null,
  -- Why a connection was refused (allowlist, private address, DNS failure …), or why it failed.
  reason text check (length(reason) <= 300),
  bytes_out bigint not null default 0 check (bytes_out >= 0),
  bytes_in bigint not null default 0 check (bytes_in >= 0),
  duration_ms integer not null default 0 check (duration_ms >= 0),
  started_at timestamptz not null default now(),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index egress_connections_agent on egress_connections (tenant_id, agent_id, started_at desc);
alter table egress_connections enable row level security;
alter table egress_connections force row level security;
create policy tenant_isolation on egress_connections
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, delete on egress_connections to enclave_app;

-- AGT-5: every support session an operator opened into an instance.
create table support_sessions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  agent_id uuid not null,
  operator text not null check (length(operator) between 1 and 200),
  started_at timestamptz not null default now(),
  ended_at timestamptz,
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index support_sessions_agent on support_sessions (tenant_id, agent_id, started_at desc);
alter table support_sessions enable row level security;
alter table support_sessions force row level security;
create policy tenant_isolation on support_sessions
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update on support_sessions to enclave_app;

-- Reconciliation after a restart finds every instance whose state differs
-- from its desired state, across tenants (ids only; each is then handled
-- under its own tenant's RLS).
create policy agent_instances_definer on agent_instances for select to enclave_owner using (true);
-- Crashed instances are left to the retries their crash scheduled (or to
-- their owner, once restarts are exhausted).
create function enclave.agent_instances_to_reconcile() returns table (tenant_id uuid, agent_id uuid)
  language sql stable security definer set search_path = enclave, pg_temp
  as $$
    select tenant_id, agent_id from agent_instances
    where state <> 'crashed' and (desired_state = 'running' or state <> 'stopped')
  $$;
revoke all on function enclave.agent_instances_to_reconcile() from public;
grant execute on function enclave.agent_instances_to_reconcile() to enclave_app;

-- The operator's support CLI names an agent by handle (unique platform-wide)
-- or id; this finds its tenant, so the rest runs under that tenant's RLS.
create policy agents_definer on agents for select to enclave_owner using (true);
create function enclave.agent_locate(p_handle text, p_id uuid) returns table (tenant_id uuid, agent_id uuid)
  language sql stable security definer set search_path = enclave, pg_temp
  as $$ select tenant_id, id from agents where handle = p_handle or id = p_id $$;
revoke all on function enclave.agent_locate(text, uuid) from public;
grant execute on function enclave.agent_locate(text, uuid) to enclave_app;
