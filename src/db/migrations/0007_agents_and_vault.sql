-- Agents and the credential vault (AGT-1, VLT-1…VLT-6).
--
-- Key hierarchy: a master key (outside the database, versioned, held by a
-- key provider) wraps one data key per tenant; the data key encrypts that
-- tenant's credentials. Only wrapped data keys and ciphertexts are stored
-- here. See src/vault/README.md for the rotation invariants.

-- Global: which master-key versions wrap data keys in this database. Each row
-- holds a canary (32 zero bytes wrapped under that version), so start-up can
-- tell a wrong master key from a right one before it touches any data key.
-- A version's row is deleted when it is retired; the foreign key from
-- vault_data_keys keeps a version in use from being retired.
create table vault_master_keys (
  version integer primary key check (version between 1 and 1000000),
  canary bytea not null check (length(canary) = 60),
  created_at timestamptz not null default now()
);
grant select, insert, delete on vault_master_keys to enclave_app;

create table agents (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  -- Platform-wide: a handle names an agent on the relay and in its card URL.
  handle text not null unique check (handle ~ '^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$'),
  name text not null check (length(name) between 1 and 100),
  description text not null default '' check (length(description) <= 1000),
  template_id text not null check (template_id ~ '^[a-z][a-z0-9-]{1,39}$'),
  -- AGT-5: on unless the owner opts out at onboarding (or later).
  support_access boolean not null default true,
  -- sha256 (hex) of the agent's identity token enc_agent_…, minted when its
  -- instance starts and handed only to that instance.
  identity_token_hash text unique check (identity_token_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (tenant_id, id)
);
create index agents_tenant on agents (tenant_id, created_at);
alter table agents enable row level security;
alter table agents force row level security;
create policy tenant_isolation on agents
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
-- The model gateway and relay find an agent by its identity token's hash.
create policy agents_identity_lookup on agents for select
  using (identity_token_hash = enclave.current_lookup());
grant select, insert, update, delete on agents to enclave_app;

-- VLT-3: what was asked for at onboarding, with every credential reduced to
-- whether it was provided. The check constraint makes a value impossible to
-- store here: every member of credentials_provided must be a boolean.
create table agent_provision_requests (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  agent_id uuid not null,
  requested_by uuid references users (id) on delete set null,
  template_id text not null,
  support_access boolean not null,
  credentials_provided jsonb not null check (
    jsonb_typeof(credentials_provided) = 'object'
    and not jsonb_path_exists(credentials_provided, '$.* ? (@.type() != "boolean")')
  ),
  created_at timestamptz not null default now(),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index agent_provision_requests_agent on agent_provision_requests (tenant_id, agent_id);
alter table agent_provision_requests enable row level security;
alter table agent_provision_requests force row level security;
create policy tenant_isolation on agent_provision_requests
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, delete on agent_provision_requests to enclave_app;

-- A tenant's data keys, wrapped (nonce ‖ ciphertext ‖ tag, 12 + 32 + 16 bytes)
-- under a master-key version with associated data = tenant id + data-key
-- version. The newest version is the one new ciphertexts use.
create table vault_data_keys (
  tenant_id uuid not null references tenants (id) on delete cascade,
  version integer not null check (version >= 1),
  master_version integer not null references vault_master_keys (version),
  wrapped bytea not null check (length(wrapped) = 60),
  created_at timestamptz not null default now(),
  primary key (tenant_id, version)
);
create index vault_data_keys_master on vault_data_keys (master_version);
alter table vault_data_keys enable row level security;
alter table vault_data_keys force row level security;
create policy tenant_isolation on vault_data_keys
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on vault_data_keys to enclave_app;

-- One row per credential. The ciphertext's associated data binds tenant,
-- agent, name and data-key version, so a ciphertext copied into another row
-- does not decrypt. last4 is null for values too short to show any of.
create table credentials (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  agent_id uuid not null,
  name text not null check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  key_version integer not null,
  ciphertext bytea not null check (length(ciphertext) between 1 and 65536),
  nonce bytea not null check (length(nonce) = 12),
  tag bytea not null check (length(tag) = 16),
  last4 text check (length(last4) = 4),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (agent_id, name),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade,
  foreign key (tenant_id, key_version) references vault_data_keys (tenant_id, version)
);
create index credentials_key_version on credentials (tenant_id, key_version);
alter table credentials enable row level security;
alter table credentials force row level security;
create policy tenant_isolation on credentials
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on credentials to enclave_app;

-- Master-key rotation re-wraps every tenant's data keys, so it must find the
-- tenants with a data key still under an older version. FORCE RLS binds the
-- owner too: this read-only policy for enclave_owner applies only inside the
-- SECURITY DEFINER function below (see 0004_checkpoints.sql).
create policy vault_data_keys_definer on vault_data_keys for select to enclave_owner using (true);

-- Tenants (ids only) holding a data key wrapped under a master version older
-- than p_version. Re-wrapping then runs per tenant, under that tenant's RLS.
create function enclave.vault_tenants_wrapped_before(p_version integer) returns setof uuid
  language sql stable security definer set search_path = enclave, pg_temp
  as $$ select distinct tenant_id from vault_data_keys where master_version < p_version $$;
revoke all on function enclave.vault_tenants_wrapped_before(integer) from public;
grant execute on function enclave.vault_tenants_wrapped_before(integer) to enclave_app;
