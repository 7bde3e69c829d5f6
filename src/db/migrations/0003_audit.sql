-- The audit log (AUD-2, AUD-3): one hash chain per tenant,
--   hash = SHA-256(prev_hash || UTF-8(canonical)), canonical = RFC 8785 JCS of
--   {v, tenant, seq, ts, actor, action, target, data}; the first prev_hash is 32 zero bytes.
-- The app role cannot write these tables at all. It appends through two
-- SECURITY DEFINER functions: audit_lock_head() locks the tenant's head and
-- returns it (the app then builds the canonical text and its hash), and
-- audit_append() checks, under that lock, that the event follows the head,
-- that its fields are the ones in the canonical text, and that the hash is
-- right — then inserts it and moves the head. docs/audit-format.md has the format.

-- Events that belong to no customer tenant (operator actions, sign-in failures
-- for unknown logins) go to the platform's own chain.
select set_config('app.tenant_id', '00000000-0000-0000-0000-000000000000', true);
insert into tenants (id, name) values ('00000000-0000-0000-0000-000000000000', 'platform');
select set_config('app.tenant_id', '', true);

create table audit_events (
  tenant_id uuid not null references tenants (id) on delete restrict,
  seq bigint not null check (seq > 0),
  occurred_at timestamptz not null,
  actor text not null,
  action text not null,
  target text,
  data jsonb not null,
  prev_hash bytea not null check (length(prev_hash) = 32),
  hash bytea not null check (length(hash) = 32),
  canonical text not null,
  primary key (tenant_id, seq)
);
alter table audit_events enable row level security;
alter table audit_events force row level security;
create policy tenant_isolation on audit_events
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select on audit_events to enclave_app;

create table audit_heads (
  tenant_id uuid primary key references tenants (id) on delete restrict,
  seq bigint not null check (seq >= 0),
  hash bytea not null check (length(hash) = 32)
);
alter table audit_heads enable row level security;
alter table audit_heads force row level security;
create policy tenant_isolation on audit_heads
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select on audit_heads to enclave_app;

-- Locks the bound tenant's head (creating the genesis head on first use) and
-- returns it with the timestamp the next event must carry. The lock is held
-- until the caller's transaction ends, so appends to one tenant are serial
-- and different tenants append in parallel.
create function enclave.audit_lock_head(out seq bigint, out hash bytea, out ts text)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  t uuid := enclave.current_tenant_id();
begin
  if t is null then
    raise exception 'audit_lock_head: no tenant bound' using errcode = '42501';
  end if;
  insert into audit_heads (tenant_id, seq, hash) values (t, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
    on conflict (tenant_id) do nothing;
  select h.seq, h.hash into seq, hash from audit_heads h where h.tenant_id = t for update;
  ts := to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
end $$;

create function enclave.audit_append(p_canonical text, p_hash bytea) returns bigint
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  t uuid := enclave.current_tenant_id();
  e jsonb;
  head_seq bigint;
  head_hash bytea;
  event_seq bigint;
  event_ts timestamptz;
begin
  if t is null then
    raise exception 'audit_append: no tenant bound' using errcode = '42501';
  end if;
  -- The canonical text is attacker-controlled as far as this function knows:
  -- every field is checked against it, and the hash recomputed here.
  begin
    e := p_canonical::jsonb;
  exception when others then
    raise exception 'audit_append: canonical text is not JSON' using errcode = '22023';
  end;
  if jsonb_typeof(e) <> 'object'
     or (select array_agg(k order by k) from jsonb_object_keys(e) k)
        <> array['action', 'actor', 'data', 'seq', 'target', 'tenant', 'ts', 'v']
     or e -> 'v' <> '1'::jsonb
     or jsonb_typeof(e -> 'seq') <> 'number'
     or jsonb_typeof(e -> 'tenant') <> 'string'
     or jsonb_typeof(e -> 'ts') <> 'string'
     or jsonb_typeof(e -> 'actor') <> 'string'
     or jsonb_typeof(e -> 'action') <> 'string'
     or jsonb_typeof(e -> 'target') not in ('string', 'null')
     or jsonb_typeof(e -> 'data') <> 'object' then
    raise exception 'audit_append: the event does not have the required fields' using errcode = '22023';
  end if;
  if (e ->> 'tenant') <> t::text then
    raise exception 'audit_append: event for another tenant' using errcode = '42501';
  end if;
  event_seq := (e ->> 'seq')::bigint;
  event_ts := (e ->> 'ts')::timestamptz;
  if event_ts > clock_timestamp() + interval '1 minute' or event_ts < clock_timestamp() - interval '10 minutes' then
    raise exception 'audit_append: event time is not now' using errcode = '22023';
  end if;
  select h.seq, h.hash into head_seq, head_hash from audit_heads h where h.tenant_id = t for update;
  if not found then
    raise exception 'audit_append: call audit_lock_head() first' using errcode = '55000';
  end if;
  if event_seq <> head_seq + 1 then
    raise exception 'audit_append: seq % does not follow the head %', event_seq, head_seq using errcode = '40001';
  end if;
  if p_hash is null or p_hash <> sha256(head_hash || convert_to(p_canonical, 'UTF8')) then
    raise exception 'audit_append: hash is not SHA-256(prev_hash || canonical)' using errcode = '22023';
  end if;
  insert into audit_events (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash, canonical)
  values (t, event_seq, event_ts, e ->> 'actor', e ->> 'action', e ->> 'target', e -> 'data', head_hash, p_hash,
          p_canonical);
  update audit_heads set seq = event_seq, hash = p_hash where tenant_id = t;
  return event_seq;
end $$;

revoke all on function enclave.audit_lock_head() from public;
revoke all on function enclave.audit_append(text, bytea) from public;
grant execute on function enclave.audit_lock_head() to enclave_app;
grant execute on function enclave.audit_append(text, bytea) to enclave_app;

-- TEN-5's interim record is replaced by `service_query` audit events.
drop table service_queries;
