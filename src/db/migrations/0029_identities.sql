-- Sign-in through GitHub and OpenID Connect providers (ACC-9).

-- Global: a provider sign-in starts before any tenant is known. One row per
-- started flow, found by the SHA-256 of its `state`, bound to the browser
-- that started it by the SHA-256 of a random value in that browser's cookie.
-- The PKCE verifier and the nonce are derived from that cookie value (see
-- src/identities/flows.ts), so no row holds them; an invite is kept as the
-- hash the invites table already holds. Used once, expires after 10 minutes.
create table identity_flows (
  state_hash text primary key check (state_hash ~ '^[0-9a-f]{64}$'),
  browser_hash text not null check (browser_hash ~ '^[0-9a-f]{64}$'),
  provider text not null check (provider ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
  purpose text not null check (purpose in ('sign_in', 'link')),
  -- Only for 'link': the signed-in user who asked to link an identity.
  link_user_id uuid references users (id) on delete cascade,
  invite_hash text check (invite_hash ~ '^[0-9a-f]{64}$'),
  next_path text check (length(next_path) <= 2048),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz,
  check ((purpose = 'link') = (link_user_id is not null)),
  check (purpose = 'sign_in' or invite_hash is null)
);
create index identity_flows_expiry on identity_flows (expires_at);
grant select, insert, update, delete on identity_flows to enclave_app;

-- An identity at a provider linked to a user: the provider's name, its issuer
-- and the provider's id of the person (`sub`; GitHub's numeric user id).
-- Never any of the provider's tokens. Found at sign-in before any tenant is
-- known through the lookup policy, by issuer and subject.
create table user_identities (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  provider text not null check (provider ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
  issuer text not null check (length(issuer) between 1 and 500),
  subject text not null check (length(subject) between 1 and 255),
  lookup_key text generated always as (issuer || ' ' || subject) stored,
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  primary key (tenant_id, id),
  unique (id),
  unique (lookup_key),
  -- One identity per provider and user: linking a second one is unlinking the first.
  unique (user_id, provider)
);
create index user_identities_user on user_identities (tenant_id, user_id, created_at, id);
alter table user_identities enable row level security;
alter table user_identities force row level security;
create policy tenant_isolation on user_identities
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy user_identities_lookup on user_identities for select
  using (lookup_key = enclave.current_lookup());
grant select, insert, update, delete on user_identities to enclave_app;

-- A provider sign-in with no account behind it may redeem the invite mailed
-- to the address the provider verified: its link went to that very address,
-- which the provider vouches for. The policy shows only mailed invites to the
-- one address app.lookup names (src/db/lookup.ts), read-only; redeeming still
-- goes through enclave.invite_redeem.
create policy invites_mailed_lookup on invites for select
  using (mailed_at is not null and email = enclave.current_lookup());
