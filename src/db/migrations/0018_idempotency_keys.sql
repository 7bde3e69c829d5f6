-- Idempotency keys (RLY-6): the Idempotency-Key request header of the IETF
-- httpapi draft, for the relay's thread start and follow-up (and any other
-- POST that creates something). One row per key a principal or token used,
-- holding what its first request answered, so a retry within 24 hours gets
-- that answer again and creates nothing (src/relay/idempotency.ts).
create table idempotency_keys (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  -- Whose key it is (a relay token, a user, ...): keys of two callers never meet.
  scope text not null check (length(scope) between 1 and 200),
  -- The header's string value, unescaped: printable ASCII only (an sf-string's characters).
  key text not null check (length(key) between 1 and 255 and key ~ '^[ -~]+$'),
  -- SHA-256 of method, path and canonical body: a reused key with another request is refused.
  fingerprint bytea not null check (length(fingerprint) = 32),
  -- Who holds the in-flight claim: only that request may complete it.
  claim uuid not null,
  state text not null check (state in ('in_flight', 'done')),
  -- An in-flight claim whose request died (a crashed process) is taken over after this.
  lease_until timestamptz,
  status integer check (status between 200 and 599),
  response_body json check (octet_length(response_body::text) <= 65536),
  created_at timestamptz not null default now(),
  expires_at timestamptz not null default now() + interval '24 hours',
  check ((state = 'in_flight') = (lease_until is not null)),
  check ((state = 'done') = (status is not null)),
  unique (tenant_id, scope, key)
);
create index idempotency_keys_expiry on idempotency_keys (tenant_id, expires_at);
alter table idempotency_keys enable row level security;
alter table idempotency_keys force row level security;
create policy tenant_isolation on idempotency_keys
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update, delete on idempotency_keys to enclave_app;
