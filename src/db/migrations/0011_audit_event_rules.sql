-- The database refuses an audit event that could never verify (AUD-3).
--
-- Until now audit_insert_checked() checked the shape of an event (its eight
-- members and their types) but not the rules a verifier holds it to: that the
-- text is the RFC 8785 (JCS) form of itself, that `ts` is RFC 3339 with
-- milliseconds, and the grammars of actor, action and target. An event that
-- breaks one is immutable once stored, so it would fail its tenant's bundle
-- forever. And the app role could still pick the time itself through
-- audit_append(), as far back as ten minutes or as a word PostgreSQL reads as
-- a time ('now').
--
-- Now:
--   * enclave.jcs() computes the canonical text of a jsonb value; an event is
--     stored only if its text equals jcs(text::jsonb). test/audit-event-rules.test.ts
--     proves it agrees with the JavaScript canonicaliser and scanner.
--   * actor, action, target and ts are checked against the grammars of
--     docs/audit-format.md §1, which src/audit/event-fields.ts also implements.
--   * Every stored event advances the sequence enclave.audit_appends, which
--     the checkpointer (src/audit/checkpointer.ts) polls to sign a checkpoint
--     within seconds of a head moving.
--   * The time is the database's: the app role can no longer call
--     audit_lock_head() or audit_append() (it has only ever used
--     audit_append_event(), which splices the time in itself), and the time
--     never goes backwards within a chain: it is the later of the clock and
--     the head event's time.

-- Sort key of an object member name under JCS: UTF-16 code units. Encoding a
-- name in CESU-8 (a character above U+FFFF as its two surrogates, each as a
-- 3-byte sequence) gives bytes whose order is the UTF-16 order; a name with no
-- such character is the same in CESU-8 and UTF-8.
create function enclave.jcs_name_order(p_name text) returns bytea
  language plpgsql immutable strict parallel safe set search_path = pg_catalog, pg_temp
  as $$
declare
  out bytea := '\x';
  c integer;
  unit integer;
begin
  if p_name !~ '[\U00010000-\U0010FFFF]' then
    return convert_to(p_name, 'UTF8');
  end if;
  foreach c in array (select array_agg(ascii(ch) order by n)
                        from regexp_split_to_table(p_name, '') with ordinality s(ch, n)) loop
    if c < 65536 then
      out := out || convert_to(chr(c), 'UTF8');
    else
      foreach unit in array array[55296 + ((c - 65536) >> 10), 56320 + ((c - 65536) & 1023)] loop
        out := out || decode(lpad(to_hex(((224 | (unit >> 12)) << 16) | ((128 | ((unit >> 6) & 63)) << 8)
                                          | (128 | (unit & 63))), 6, '0'), 'hex');
      end loop;
    end if;
  end loop;
  return out;
end $$;

-- A JSON number as ECMAScript's Number::toString prints it (RFC 8785 §3.2.2.3):
-- the double nearest to it, in the fewest digits that read back as that
-- double. PostgreSQL prints a double in shortest digits when
-- extra_float_digits is 1, but in another layout (1e+20, 1e-07), and it
-- leaves out a shorter string that lies exactly halfway to the next double
-- and reads back by rounding to even (1e+23 prints as 9.999999999999999e+22),
-- which ECMAScript takes. So the shorter roundings of its digits are tried
-- first. A number outside the range of a double raises 22003.
create function enclave.jcs_number(p_value numeric) returns text
  language plpgsql immutable strict parallel safe set search_path = pg_catalog, pg_temp set extra_float_digits = 1
  as $$
declare
  d float8 := p_value::float8;
  parts text[];
  sign text;
  digits text;
  point integer;
  k integer;
  down text;
  up text;
  down_reads boolean;
  up_reads boolean;
begin
  if d = 0 then
    return '0';
  end if;
  parts := regexp_match(d::text, '^(-?)([0-9]+)(?:\.([0-9]+))?(?:e([-+][0-9]+))?$');
  sign := parts[1];
  digits := parts[2] || coalesce(parts[3], '');
  -- The value is 0.<digits> × 10^point.
  point := length(parts[2]) + coalesce(parts[4]::integer, 0);
  point := point - (length(digits) - length(ltrim(digits, '0')));
  digits := rtrim(ltrim(digits, '0'), '0');
  for p in 1 .. length(digits) - 1 loop
    down := left(digits, p);
    up := (down::numeric + 1)::text;
    down_reads := (sign || '0.' || down || 'e' || point)::float8 = d;
    up_reads := false;
    -- Rounding up near the largest double may leave the range, which float8 refuses.
    if ('0.' || up || 'e' || (point + length(up) - p))::numeric <= 1.7976931348623157e308 then
      up_reads := (sign || '0.' || up || 'e' || (point + length(up) - p))::float8 = d;
    end if;
    if down_reads or up_reads then
      -- Both read back only when d lies exactly between them: ECMAScript takes the even one.
      if up_reads and (not down_reads or right(up, 1)::integer % 2 = 0) then
        point := point + length(up) - p;
        digits := rtrim(up, '0');
      else
        digits := rtrim(down, '0');
      end if;
      exit;
    end if;
  end loop;
  k := length(digits);
  if k <= point and point <= 21 then
    return sign || digits || repeat('0', point - k);
  elsif 0 < point and point <= 21 then
    return sign || left(digits, point) || '.' || substr(digits, point + 1);
  elsif -6 < point and point <= 0 then
    return sign || '0.' || repeat('0', -point) || digits;
  end if;
  return sign || left(digits, 1) || case when k > 1 then '.' || substr(digits, 2) else '' end
         || 'e' || case when point - 1 > 0 then '+' else '-' end || abs(point - 1)::text;
end $$;

-- The RFC 8785 canonical text of a jsonb value. Containers nest at most 100
-- deep, as src/audit/canonical-text.ts's MAX_JSON_DEPTH (the event object
-- itself is depth 0). Strings are printed by jsonb itself, whose escapes are
-- JCS's: \" \\ \b \f \n \r \t and lowercase \u00xx for other controls.
create function enclave.jcs(p_value jsonb, p_depth integer default 0) returns text
  language plpgsql immutable strict parallel safe set search_path = enclave, pg_catalog, pg_temp
  as $$
declare
  kind text := jsonb_typeof(p_value);
begin
  if kind in ('object', 'array') and p_depth >= 100 then
    raise exception 'jcs: JSON nested deeper than 100 levels' using errcode = '22023';
  end if;
  if kind = 'object' then
    return '{' || coalesce((select string_agg(to_json(m.key)::text || ':' || enclave.jcs(m.value, p_depth + 1), ','
                                              order by enclave.jcs_name_order(m.key))
                              from jsonb_each(p_value) m), '') || '}';
  elsif kind = 'array' then
    return '[' || coalesce((select string_agg(enclave.jcs(a.value, p_depth + 1), ',' order by a.n)
                              from jsonb_array_elements(p_value) with ordinality a(value, n)), '') || ']';
  elsif kind = 'number' then
    return enclave.jcs_number(p_value::text::numeric);
  end if;
  return p_value::text;
end $$;

grant execute on function enclave.jcs_name_order(text), enclave.jcs_number(numeric), enclave.jcs(jsonb, integer)
  to enclave_app;

-- The time the bound tenant's next event carries: now, or the head event's
-- time if the clock has gone back since (an NTP step, a failover to a server
-- whose clock is behind), so times never decrease along a chain.
create function enclave.audit_next_ts(p_tenant uuid, p_head_seq bigint) returns text
  language sql stable set search_path = enclave, pg_temp
  as $$
  select to_char(greatest(clock_timestamp(), (select e.occurred_at from audit_events e
                                                where e.tenant_id = p_tenant and e.seq = p_head_seq))
                   at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;
revoke all on function enclave.audit_next_ts(uuid, bigint) from public;

create or replace function enclave.audit_lock_head(out seq bigint, out hash bytea, out ts text)
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
  ts := enclave.audit_next_ts(t, seq);
end $$;

-- Only the definer functions (retention's, in 0005) call these two now.
revoke execute on function enclave.audit_lock_head() from enclave_app;
revoke execute on function enclave.audit_append(text, bytea) from enclave_app;

create sequence enclave.audit_appends;
grant select on sequence enclave.audit_appends to enclave_app;

create or replace function enclave.audit_insert_checked(
  p_caller text, p_tenant uuid, p_canonical text, p_hash bytea, p_head_seq bigint, p_head_hash bytea, p_ts text
) returns void
  language plpgsql set search_path = enclave, pg_temp
  as $$
declare
  e jsonb;
  event_keys text[];
  canonical text;
  event_seq bigint;
  event_ts timestamptz;
  head_ts timestamptz;
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
  begin
    canonical := enclave.jcs(e);
  exception when others then
    raise exception '%: the event is not in canonical (RFC 8785) form', p_caller using errcode = '22023';
  end;
  if canonical <> p_canonical then
    raise exception '%: the event is not in canonical (RFC 8785) form', p_caller using errcode = '22023';
  end if;
  if (e ->> 'tenant') <> p_tenant::text then
    raise exception '%: event for another tenant', p_caller using errcode = '42501';
  end if;
  -- The grammars of docs/audit-format.md §1 (and src/audit/event-fields.ts).
  -- Lengths count code points; the character classes are ASCII ranges.
  if (e ->> 'actor') !~ '^[\x21-\x7e]+$' or length(e ->> 'actor') > 256 then
    raise exception '%: actor must be 1–256 printable ASCII characters', p_caller using errcode = '22023';
  end if;
  if (e ->> 'action') !~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$' or length(e ->> 'action') > 128 then
    raise exception '%: action must be lowercase dotted words, at most 128 characters', p_caller using errcode = '22023';
  end if;
  if jsonb_typeof(e -> 'target') = 'string'
     and ((e ->> 'target') = '' or length(e ->> 'target') > 512 or (e ->> 'target') ~ '[\x01-\x1f\x7f]') then
    raise exception '%: target must be null or 1–512 characters, no controls', p_caller using errcode = '22023';
  end if;
  event_seq := (e ->> 'seq')::bigint;
  if p_ts is not null and (e ->> 'ts') <> p_ts then
    raise exception '%: event time is not the one the database chose', p_caller using errcode = '22023';
  end if;
  -- RFC 3339 UTC with milliseconds, and a real date: the text must read back
  -- to itself ('now', '2026-02-30…' and '…+01:00' do not).
  begin
    event_ts := (e ->> 'ts')::timestamptz;
  exception when others then
    event_ts := null;
  end;
  if (e ->> 'ts') !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$'
     or event_ts is null
     or to_char(event_ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') <> (e ->> 'ts') then
    raise exception '%: ts must be RFC 3339 UTC with milliseconds', p_caller using errcode = '22023';
  end if;
  select a.occurred_at into head_ts from audit_events a where a.tenant_id = p_tenant and a.seq = p_head_seq;
  if event_ts < head_ts then
    raise exception '%: event time is before the previous event''s', p_caller using errcode = '22023';
  end if;
  if event_ts > greatest(clock_timestamp(), head_ts) + interval '1 minute'
     or event_ts < clock_timestamp() - interval '10 minutes' then
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
  perform nextval('enclave.audit_appends');
end $$;

create or replace function enclave.audit_append_event(
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
  ts := enclave.audit_next_ts(t, head_seq);
  canonical := p_before_seq || seq::text || p_before_ts || ts || p_after_ts;
  hash := sha256(head_hash || convert_to(canonical, 'UTF8'));
  -- The parsed seq must be head + 1 and the parsed ts the one spliced in: a
  -- part that moves either, or repeats or adds a member, is refused there.
  perform enclave.audit_insert_checked('audit_append_event', t, canonical, hash, head_seq, head_hash, ts);
end $$;
