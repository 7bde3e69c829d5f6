-- Accounts and sessions. Users, sessions, API tokens and one-time links are
-- tenant tables like any other. Sign-in must find a row before any tenant is
-- known, so each of them also has one narrow *_lookup policy: FOR SELECT
-- only, matching the single row whose login or token hash equals app.lookup,
-- which lookup transactions set (see withLookup in src/db/lookup.ts). Knowing
-- a token's hash is what it takes to see its row.

create function enclave.current_lookup() returns text
  language sql stable parallel safe
  as $$ select nullif(current_setting('app.lookup', true), '') $$;

create table users (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  username text not null unique check (username ~ '^[a-z0-9_-]{3,32}$'),
  email text not null unique check (email = lower(email) and length(email) between 3 and 254),
  email_verified boolean not null default false,
  pending_email text check (pending_email = lower(pending_email) and length(pending_email) between 3 and 254),
  password_hash text not null,
  role text not null check (role in ('owner', 'member')),
  is_operator boolean not null default false,
  created_at timestamptz not null default now(),
  password_changed_at timestamptz not null default now()
);
create index users_tenant on users (tenant_id);
alter table users enable row level security;
alter table users force row level security;
create policy tenant_isolation on users
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy users_login_lookup on users for select
  using (username = enclave.current_lookup() or email = enclave.current_lookup());
grant select, insert, update, delete on users to enclave_app;

create table sessions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  created_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  expires_at timestamptz not null,
  revoked_at timestamptz,
  user_agent text check (length(user_agent) <= 300),
  client_ip text check (length(client_ip) <= 64)
);
create index sessions_user on sessions (tenant_id, user_id);
alter table sessions enable row level security;
alter table sessions force row level security;
create policy tenant_isolation on sessions
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy sessions_lookup on sessions for select using (token_hash = enclave.current_lookup());
grant select, insert, update, delete on sessions to enclave_app;

create table api_tokens (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  name text not null check (length(name) between 1 and 100),
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  last4 text not null check (length(last4) = 4),
  scope text not null check (scope in ('read', 'write')),
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  expires_at timestamptz,
  revoked_at timestamptz
);
create index api_tokens_user on api_tokens (tenant_id, user_id);
alter table api_tokens enable row level security;
alter table api_tokens force row level security;
create policy tenant_isolation on api_tokens
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy api_tokens_lookup on api_tokens for select using (token_hash = enclave.current_lookup());
grant select, insert, update, delete on api_tokens to enclave_app;

-- One-time links (ACC-7): the token is minted by the job that sends the mail,
-- so its plaintext exists only in that job and in the message.
create table email_tokens (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  purpose text not null check (purpose in ('verify_email', 'recover')),
  email text not null check (length(email) between 3 and 254),
  token_hash text unique check (token_hash ~ '^[0-9a-f]{64}$'),
  support_reference text,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  used_at timestamptz
);
create index email_tokens_user on email_tokens (tenant_id, user_id);
alter table email_tokens enable row level security;
alter table email_tokens force row level security;
create policy tenant_isolation on email_tokens
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy email_tokens_lookup on email_tokens for select using (token_hash = enclave.current_lookup());
grant select, insert, update, delete on email_tokens to enclave_app;

-- Global: an invite exists before the tenant it creates (signup) and is
-- redeemed by someone who has no session yet. Member invites name the tenant
-- they join.
create table invites (
  id uuid primary key default gen_random_uuid(),
  kind text not null check (kind in ('operator', 'tenant', 'member')),
  tenant_id uuid references tenants (id) on delete cascade,
  email text check (email = lower(email) and length(email) between 3 and 254),
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  created_by uuid references users (id) on delete set null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz,
  used_by uuid references users (id) on delete set null,
  revoked_at timestamptz,
  check ((kind = 'member') = (tenant_id is not null)),
  check (kind = 'operator' or email is not null)
);
create index invites_tenant on invites (tenant_id) where tenant_id is not null;
grant select, insert, update on invites to enclave_app;

-- Global: a recovery request may match no account at all, and must be
-- answered (and findable by support) all the same.
create table recovery_requests (
  reference text primary key check (reference ~ '^REC-[0-9A-Z]{4}-[0-9A-Z]{4}$'),
  requested_at timestamptz not null default now(),
  client_ip text check (length(client_ip) <= 64),
  matched boolean not null
);
grant select, insert, delete on recovery_requests to enclave_app;

-- Global: rate-limit counters (rate-limiter-flexible's table layout), keyed by
-- client address or by a hash of the login tried.
create table rate_limits (
  key varchar(255) primary key,
  points integer not null default 0,
  expire bigint
);
grant select, insert, update, delete on rate_limits to enclave_app;

-- Global, development only: mail that would have been sent, shown at /dev/mail.
create table dev_outbox (
  id uuid primary key default gen_random_uuid(),
  to_address text not null,
  subject text not null,
  body text not null,
  created_at timestamptz not null default now()
);
grant select, insert, delete on dev_outbox to enclave_app;
