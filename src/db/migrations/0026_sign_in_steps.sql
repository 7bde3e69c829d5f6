-- Sign-in methods (ACC-8, ACC-9): second factors, the step between a passed
-- first step (password, provider) and a session, the tenant's policy, and the
-- time a session last proved who it is (re-authentication).

-- An account made through a provider or a passkey may have no password;
-- signing in with a password then fails like a wrong one.
alter table users alter column password_hash drop not null;

-- A tenant owner can require a second factor of every member.
alter table tenants add column require_second_factor boolean not null default false;

-- When the session's user last passed sign-in in full. Turning off a factor,
-- changing the email, unlinking an identity and creating an API token need it
-- within the last 10 minutes.
alter table sessions add column authenticated_at timestamptz not null default now();

-- One row per second factor a user has enrolled. Email and TOTP are one of
-- each per user; passkeys may be several. The kind's own data lives in its own
-- table, keyed by the factor id.
create table user_factors (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  kind text not null check (kind in ('email', 'totp', 'passkey')),
  name text not null check (length(name) between 1 and 100),
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  primary key (tenant_id, id),
  unique (id)
);
create index user_factors_user on user_factors (tenant_id, user_id, created_at, id);
create unique index user_factors_one_email on user_factors (user_id) where kind = 'email';
create unique index user_factors_one_totp on user_factors (user_id) where kind = 'totp';
alter table user_factors enable row level security;
alter table user_factors force row level security;
create policy tenant_isolation on user_factors
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on user_factors to enclave_app;

-- A sign-in waiting for its second step. Found by the hash of a random value
-- in a cookie set on the browser that passed the first step (the lookup
-- policy shows only that row), and by the id in the URL: both must match.
-- No session exists until the step is passed.
create table sign_in_challenges (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  browser_hash text not null unique check (browser_hash ~ '^[0-9a-f]{64}$'),
  -- How the first step was passed: 'password' or 'provider:<name>'.
  first_step text not null check (length(first_step) between 1 and 80),
  next_path text check (length(next_path) <= 2048),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  failed_attempts integer not null default 0 check (failed_attempts >= 0),
  completed_at timestamptz,
  -- The email code, if one was sent: its hash and its own expiry.
  email_code_hash text check (email_code_hash ~ '^[0-9a-f]{64}$'),
  email_code_expires_at timestamptz,
  email_codes_sent integer not null default 0 check (email_codes_sent >= 0),
  primary key (tenant_id, id),
  unique (id)
);
create index sign_in_challenges_user on sign_in_challenges (tenant_id, user_id);
create index sign_in_challenges_expiry on sign_in_challenges (expires_at);
alter table sign_in_challenges enable row level security;
alter table sign_in_challenges force row level security;
create policy tenant_isolation on sign_in_challenges
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy sign_in_challenges_lookup on sign_in_challenges for select
  using (browser_hash = enclave.current_lookup());
grant select, insert, update, delete on sign_in_challenges to enclave_app;
