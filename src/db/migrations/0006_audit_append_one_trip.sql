-- One round trip per audit append (AUD-3). Until now the app locked the head
-- (audit_lock_head), built the canonical text and its hash, and sent them to
-- audit_append: two round trips inside the action's transaction. Only two
-- values of the event are the database's to choose, seq and ts, and JCS
-- sorts the top-level members (action, actor, data, seq, target, tenant, ts,
-- v), so the app can send the canonical text cut around them:
--
--   canonical = p_before_seq || seq || p_before_ts || ts || p_after_ts
--   p_before_seq = {"action":…,"actor":…,"data":…,"seq":
--   p_before_ts  = ,"target":…,"tenant":"…","ts":"
--   p_after_ts   = ","v":1}
--
-- audit_append_event() locks the head, splices seq = head + 1 and ts = now,
-- and computes the hash itself. The spliced text is attacker-controlled as far
-- as it knows, so it goes through the same checks as audit_append's, in one
-- place: audit_insert_checked(), which both call and which alone inserts.
-- audit_lock_head() and audit_append() stay (the retention functions of
-- 0005 use them), now with audit_append going through audit_insert_checked.

-- The checks and the insert, for a tenant whose head (p_head_seq, p_head_hash)
-- the caller has locked: the text is a JSON object with exactly the eight
-- members (each once) of the right types, v = 1, for the bound tenant, seq =
-- head + 1, ts now (and equal to p_ts when given), p_hash = SHA-256(head hash ‖
-- UTF-8 text). Then the row goes in and the head moves. Not callable by
-- enclave_app: only the SECURITY DEFINER functions above it run it.
create function enclave.audit_insert_checked(
  p_caller text, p_tenant uuid, p_canonical text, p_hash bytea, p_head_seq bigint, p_head_hash bytea, p_ts text
) returns void
  language plpgsql set search_path = enclave, pg_temp
  as $$
declare
  e jsonb;
  event_keys text[];
  event_seq bigint;
  event_ts timestamptz;
begin
  begin
    e := p_canonical::jsonb;
    -- json (not jsonb) keeps duplicate members, so a member given twice is seen.
    select array_agg(k order by k) into event_keys from json_object_keys(p_canonical::json) k;
  exception when others then
    raise exception '%: canonical text is not JSON', p_caller using errcode = '22023';
  end;
  if e is null
     or jsonb_typeof(e) <> 'object'
     or event_keys is distinct from array['action', 'actor', 'data', 'seq', 'target', 'tenant', 'ts', 'v']
     or e -> 'v' <> '1'::jsonb
     or jsonb_typeof(e -> 'seq') <> 'number'
     or (e ->> 'seq') !~ '^[1-9][0-9]{0,17}$'
     or jsonb_typeof(e -> 'tenant') <> 'string'
     or jsonb_typeof(e -> 'ts') <> 'string'
     or jsonb_typeof(e -> 'actor') <> 'string'
     or jsonb_typeof(e -> 'action') <> 'string'
     or jsonb_typeof(e -> 'target') not in ('string', 'null')
     or jsonb_typeof(e -> 'data') <> 'object' then
    raise exception '%: the event does not have the required fields', p_caller using errcode = '22023';
  end if;
  if (e ->> 'tenant') <> p_tenant::text then
    raise exception '%: event for another tenant', p_caller using errcode = '42501';
  end if;
  event_seq := (e ->> 'seq')::bigint;
  if p_ts is not null and (e ->> 'ts') <> p_ts then
    raise exception '%: event time is not the one the database chose', p_caller using errcode = '22023';
  end if;
  event_ts := (e ->> 'ts')::timestamptz;
  if event_ts > clock_timestamp() + interval '1 minute' or event_ts < clock_timestamp() - interval '10 minutes' then
    raise exception '%: event time is not now', p_caller using errcode = '22023';
  end if;
  if event_seq <> p_head_seq + 1 then
    raise exception '%: seq % does not follow the head %', p_caller, event_seq, p_head_seq using errcode = '40001';
  end if;
  if p_hash is null or p_hash <> sha256(p_head_hash || convert_to(p_canonical, 'UTF8')) then
    raise exception '%: hash is not SHA-256(prev_hash || canonical)', p_caller using errcode = '22023';
  end if;
  insert into audit_events (tenant_id, seq, occurred_at, actor, action, target, data, prev_hash, hash, canonical)
  values (p_tenant, event_seq, event_ts, e ->> 'actor', e ->> 'action', e ->> 'target', e -> 'data', p_head_hash,
          p_hash, p_canonical);
  update audit_heads set seq = event_seq, hash = p_hash where tenant_id = p_tenant;
end $$;

revoke all on function enclave.audit_insert_checked(text, uuid, text, bytea, bigint, bytea, text) from public;

-- As before: the head must have been locked with audit_lock_head() in this
-- transaction (this locks it again, which is free), and the caller's text and
-- hash are checked. Same signature, grants and errors.
create or replace function enclave.audit_append(p_canonical text, p_hash bytea) returns bigint
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  t uuid := enclave.current_tenant_id();
  head_seq bigint;
  head_hash bytea;
begin
  if t is null then
    raise exception 'audit_append: no tenant bound' using errcode = '42501';
  end if;
  select h.seq, h.hash into head_seq, head_hash from audit_heads h where h.tenant_id = t for update;
  if not found then
    raise exception 'audit_append: call audit_lock_head() first' using errcode = '55000';
  end if;
  perform enclave.audit_insert_checked('audit_append', t, p_canonical, p_hash, head_seq, head_hash, null);
  return head_seq + 1;
end $$;

-- Appends one event to the bound tenant's chain in one call: locks the head
-- (creating the genesis head on first use; held until the transaction ends,
-- so appends to one tenant are serial and different tenants append in
-- parallel), splices seq and ts into the caller's parts, hashes the text and
-- stores it through audit_insert_checked. Returns the event's seq and hash.
create function enclave.audit_append_event(
  p_before_seq text, p_before_ts text, p_after_ts text, out seq bigint, out hash bytea
)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  t uuid := enclave.current_tenant_id();
  head_seq bigint;
  head_hash bytea;
  ts text;
  canonical text;
begin
  if t is null then
    raise exception 'audit_append_event: no tenant bound' using errcode = '42501';
  end if;
  -- Each part ends where seq or ts goes, so the two are whole JSON tokens
  -- (no `1` || seq, no seq || `e0`); the rest is checked on the spliced text.
  if not coalesce(right(p_before_seq, 7) = ',"seq":' and left(p_before_ts, 10) = ',"target":'
                  and right(p_before_ts, 7) = ',"ts":"' and p_after_ts = '","v":1}', false) then
    raise exception 'audit_append_event: the parts are not cut around seq and ts' using errcode = '22023';
  end if;
  insert into audit_heads (tenant_id, seq, hash) values (t, 0, '\x0000000000000000000000000000000000000000000000000000000000000000')
    on conflict (tenant_id) do nothing;
  select h.seq, h.hash into head_seq, head_hash from audit_heads h where h.tenant_id = t for update;
  seq := head_seq + 1;
  ts := to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
  canonical := p_before_seq || seq::text || p_before_ts || ts || p_after_ts;
  hash := sha256(head_hash || convert_to(canonical, 'UTF8'));
  -- The parsed seq must be head + 1 and the parsed ts the one spliced in: a
  -- part that moves either, or repeats or adds a member, is refused there.
  perform enclave.audit_insert_checked('audit_append_event', t, canonical, hash, head_seq, head_hash, ts);
end $$;

revoke all on function enclave.audit_append_event(text, text, text) from public;
grant execute on function enclave.audit_append_event(text, text, text) to enclave_app;

-- appendPlatformAuditEvent's call: the same append to the platform's chain
-- from a transaction bound to a customer tenant, which is bound again after.
-- It runs as its caller (not SECURITY DEFINER): it does only what enclave_app
-- could do in three statements, in one round trip.
create function enclave.audit_append_platform_event(
  p_before_seq text, p_before_ts text, p_after_ts text, out seq bigint, out hash bytea
)
  language plpgsql set search_path = enclave, pg_temp
  as $$
declare
  bound text := current_setting('app.tenant_id', true);
begin
  perform set_config('app.tenant_id', '00000000-0000-0000-0000-000000000000', true);
  select a.seq, a.hash into seq, hash from enclave.audit_append_event(p_before_seq, p_before_ts, p_after_ts) a;
  perform set_config('app.tenant_id', coalesce(bound, ''), true);
end $$;

revoke all on function enclave.audit_append_platform_event(text, text, text) from public;
grant execute on function enclave.audit_append_platform_event(text, text, text) to enclave_app;
