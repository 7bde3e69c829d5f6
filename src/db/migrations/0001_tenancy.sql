-- Tenancy core. Every tenant-owned table follows the pattern set here:
-- tenant_id uuid not null, ENABLE + FORCE row level security, and one policy
-- whose USING and WITH CHECK compare tenant_id with current_tenant_id().

grant usage on schema enclave to enclave_app;

-- The tenant bound to the current transaction by withTenant(), or null when
-- none is: a policy comparing with null matches no row, so a query that
-- forgot its tenant reads nothing and writes nothing (fail closed).
create function enclave.current_tenant_id() returns uuid
  language sql stable parallel safe
  as $$ select nullif(current_setting('app.tenant_id', true), '')::uuid $$;

create table tenants (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  created_at timestamptz not null default now()
);
alter table tenants enable row level security;
alter table tenants force row level security;
create policy tenant_isolation on tenants
  using (id = enclave.current_tenant_id())
  with check (id = enclave.current_tenant_id());
grant select, insert, update, delete on tenants to enclave_app;

-- Interim record of system work on tenant data (TEN-5), replaced by audit
-- events when the audit log arrives. Tenant-scoped, so a tenant can see what
-- the platform did with its data.
create table service_queries (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  reason text not null check (length(reason) between 1 and 200),
  occurred_at timestamptz not null default now()
);
create index service_queries_tenant_time on service_queries (tenant_id, occurred_at);
alter table service_queries enable row level security;
alter table service_queries force row level security;
create policy tenant_isolation on service_queries
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert on service_queries to enclave_app;

-- Global: liveness of worker processes, which serve every tenant.
create table worker_heartbeats (
  worker_id text primary key check (length(worker_id) between 1 and 200),
  started_at timestamptz not null,
  seen_at timestamptz not null
);
grant select, insert, update, delete on worker_heartbeats to enclave_app;
