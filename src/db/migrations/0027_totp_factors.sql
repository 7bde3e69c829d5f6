-- TOTP second factors and recovery codes (ACC-8).

-- A TOTP secret, sealed under the tenant's data key with associated data of
-- its own purpose (enclave.vault.totp-secret.v1: tenant, user, id, key
-- version), so it never opens as a customer credential, nor one as it.
-- While enrolment waits for its first code the row has no factor and
-- expires; the code confirms it, and the user_factors row is made with this
-- row's id (factor_id = id), so the associated data stays the same.
create table totp_secrets (
  id uuid not null,
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  factor_id uuid references user_factors (id) on delete cascade,
  key_version integer not null,
  ciphertext bytea not null check (length(ciphertext) = 20),
  nonce bytea not null check (length(nonce) = 12),
  tag bytea not null check (length(tag) = 16),
  -- The RFC 6238 time step of the newest code accepted: a code of that step
  -- or an earlier one is refused, so no code works twice.
  last_used_step bigint check (last_used_step >= 0),
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  primary key (tenant_id, id),
  unique (id),
  check (factor_id is null or factor_id = id),
  check ((factor_id is null) = (expires_at is not null)),
  foreign key (tenant_id, key_version) references vault_data_keys (tenant_id, version)
);
create unique index totp_secrets_one_pending on totp_secrets (user_id) where factor_id is null;
create index totp_secrets_user on totp_secrets (tenant_id, user_id);
create index totp_secrets_key_version on totp_secrets (tenant_id, key_version);
alter table totp_secrets enable row level security;
alter table totp_secrets force row level security;
create policy tenant_isolation on totp_secrets
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on totp_secrets to enclave_app;

-- Recovery codes: the SHA-256 of each (80 random bits, so a hash is enough),
-- each used once. Regenerating deletes the old set.
create table recovery_codes (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  code_hash text not null check (code_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  used_at timestamptz,
  primary key (tenant_id, id),
  unique (id),
  unique (user_id, code_hash)
);
create index recovery_codes_user on recovery_codes (tenant_id, user_id);
alter table recovery_codes enable row level security;
alter table recovery_codes force row level security;
create policy tenant_isolation on recovery_codes
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on recovery_codes to enclave_app;
