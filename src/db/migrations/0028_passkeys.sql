-- Passkeys (ACC-8): WebAuthn credentials, one per user_factors row of kind
-- 'passkey', and the challenges their ceremonies wait on.

-- The public half of a credential and what its authenticator last reported.
-- The credential id is unique across the platform: a passwordless sign-in
-- finds the credential, and through it the account, by that id alone,
-- before any tenant is known (the lookup policy shows that one row).
create table passkey_credentials (
  factor_id uuid not null references user_factors (id) on delete cascade,
  tenant_id uuid not null references tenants (id) on delete cascade,
  -- base64url of the raw credential id (at most 1023 bytes, WebAuthn §5.8.2).
  credential_id text not null unique
    check (length(credential_id) between 1 and 1364 and credential_id ~ '^[A-Za-z0-9_-]+$'),
  -- COSE public key: verifies assertions, secret to no one.
  public_key bytea not null check (length(public_key) between 1 and 2048),
  -- The authenticator's signature counter as last seen: an assertion must
  -- raise it (unless the authenticator keeps none, and it stays 0).
  sign_count bigint not null check (sign_count between 0 and 4294967295),
  transports text[] not null default '{}' check (cardinality(transports) <= 10),
  -- Backup eligibility is fixed for a credential's life; the backup state can change.
  backup_eligible boolean not null,
  backed_up boolean not null,
  primary key (tenant_id, factor_id),
  unique (factor_id)
);
alter table passkey_credentials enable row level security;
alter table passkey_credentials force row level security;
create policy tenant_isolation on passkey_credentials
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy passkey_credentials_lookup on passkey_credentials for select
  using (credential_id = enclave.current_lookup());
grant select, insert, update, delete on passkey_credentials to enclave_app;

-- Global: the random challenge of one WebAuthn ceremony, found by what it is
-- bound to (the hash of a session id when adding a passkey, of a browser
-- cookie for a passwordless sign-in, of a sign-in challenge id for a second
-- step). A passwordless sign-in asks for one before any account or tenant is
-- known. Taking a challenge deletes it: each is used once. A new one for the
-- same binding replaces the old.
create table passkey_challenges (
  purpose text not null check (purpose in ('register', 'sign_in', 'second_step')),
  binding_hash text not null check (binding_hash ~ '^[0-9a-f]{64}$'),
  challenge text not null check (challenge ~ '^[A-Za-z0-9_-]{43}$'),
  expires_at timestamptz not null,
  primary key (purpose, binding_hash)
);
create index passkey_challenges_expiry on passkey_challenges (expires_at);
grant select, insert, update, delete on passkey_challenges to enclave_app;
