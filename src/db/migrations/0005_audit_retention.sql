-- Retention of the audit log (AUD-7): events older than the hot window move
-- to write-once cold archive segments (gzip files of bundle event lines,
-- written by src/audit/retention.ts), and segments past the cold window are
-- deleted. Both moves are recorded in the tenant's own chain
-- (audit.archived, audit.archive_deleted), so a verifier sees them.
--
-- The only way to delete audit rows is audit_archive_segment(), and the
-- database itself holds the line: it deletes only a contiguous range starting
-- at the tenant's oldest event, older than the hot window (never less than
-- 90 days, whatever the caller asks), whose bytes hash to the digest of the
-- segment file the caller wrote, and only after recording that manifest. A
-- delete trigger refuses any other delete, even by the owner.

create table audit_archive_segments (
  tenant_id uuid not null references tenants (id) on delete restrict,
  first_seq bigint not null check (first_seq > 0),
  last_seq bigint not null,
  first_prev_hash bytea not null check (length(first_prev_hash) = 32),
  last_hash bytea not null check (length(last_hash) = 32),
  -- SHA-256 of the segment's uncompressed bytes: its event lines, each ending in "\n".
  sha256 bytea not null check (length(sha256) = 32),
  first_ts timestamptz not null,
  last_ts timestamptz not null,
  file text not null check (file ~ '^segment-[0-9]{16}-[0-9]{16}\.jsonl\.gz$'),
  archived_at timestamptz not null default now(),
  -- Set when the segment is deleted past the cold window; the manifest stays.
  deleted_at timestamptz,
  primary key (tenant_id, first_seq),
  check (last_seq >= first_seq)
);
alter table audit_archive_segments enable row level security;
alter table audit_archive_segments force row level security;
create policy tenant_isolation on audit_archive_segments
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select on audit_archive_segments to enclave_app;

-- Deletes of audit rows: only rows past the 90-day floor, and only rows a
-- recorded archive manifest covers. TRUNCATE: never.
create function enclave.audit_events_guard_delete() returns trigger
  language plpgsql set search_path = enclave, pg_temp
  as $$
begin
  if old.occurred_at >= now() - interval '90 days' then
    raise exception 'audit event % of tenant % is younger than 90 days and cannot be deleted', old.seq, old.tenant_id
      using errcode = '42501';
  end if;
  if not exists (
    select 1 from (
      select s.last_seq from audit_archive_segments s
      where s.tenant_id = old.tenant_id and s.first_seq <= old.seq
      order by s.first_seq desc limit 1
    ) covering where covering.last_seq >= old.seq
  ) then
    raise exception 'audit event % of tenant % is not covered by an archive manifest', old.seq, old.tenant_id
      using errcode = '42501';
  end if;
  return old;
end $$;
create trigger audit_events_guard_delete before delete on audit_events
  for each row execute function enclave.audit_events_guard_delete();

create function enclave.audit_refuse_truncate() returns trigger
  language plpgsql set search_path = enclave, pg_temp
  as $$
begin
  raise exception 'the audit log cannot be truncated' using errcode = '42501';
end $$;
create trigger audit_events_no_truncate before truncate on audit_events
  for each statement execute function enclave.audit_refuse_truncate();

-- For each tenant, the range of events older than the hot window that are
-- still in the database: from its oldest event up to the last event before
-- the first one inside the window. The caller writes segments of it.
create function enclave.audit_archive_candidates(p_hot_days integer)
  returns table (archive_tenant uuid, archive_first_seq bigint, archive_last_seq bigint)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  cutoff timestamptz := now() - make_interval(days => greatest(coalesce(p_hot_days, 90), 90));
  t uuid;
  lo bigint;
  hi bigint;
  young bigint;
begin
  -- Heads are readable across tenants through audit_heads_definer (0004); each
  -- tenant's events are then read bound to that tenant, under its policy, and
  -- the caller's binding is restored at the end.
  for t in select h.tenant_id from audit_heads h order by h.tenant_id loop
    perform set_config('app.tenant_id', t::text, true);
    select min(e.seq), max(e.seq) into lo, hi from audit_events e where e.tenant_id = t;
    continue when lo is null;
    select e.seq into young from audit_events e
      where e.tenant_id = t and e.occurred_at >= cutoff order by e.seq limit 1;
    if found then
      hi := young - 1;
    end if;
    if hi >= lo then
      archive_tenant := t;
      archive_first_seq := lo;
      archive_last_seq := hi;
      return next;
    end if;
  end loop;
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
end $$;

-- Moves events first..last of a tenant out of the database after the caller
-- has written their segment file; p_sha256 is that file's uncompressed digest,
-- recomputed here from the rows. Appends audit.archived and returns its seq.
create function enclave.audit_archive_segment(
  p_tenant uuid, p_first_seq bigint, p_last_seq bigint, p_sha256 bytea, p_hot_days integer
) returns bigint
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  cutoff timestamptz := now() - make_interval(days => greatest(coalesce(p_hot_days, 90), 90));
  oldest_seq bigint;
  n bigint;
  oldest timestamptz;
  newest timestamptz;
  digest bytea;
  first_prev bytea;
  last_h bytea;
  previous record;
  head record;
  canonical text;
begin
  if p_tenant is null or p_first_seq is null or p_last_seq is null or p_last_seq < p_first_seq then
    raise exception 'audit_archive_segment: give a tenant and a seq range' using errcode = '22023';
  end if;
  perform set_config('app.tenant_id', p_tenant::text, true);
  -- Waits for exports of this tenant (they hold this lock shared), then for its appends.
  perform pg_advisory_xact_lock(hashtext('enclave.audit_archive'), hashtext(p_tenant::text));
  select * into head from enclave.audit_lock_head();
  select min(e.seq) into oldest_seq from audit_events e where e.tenant_id = p_tenant;
  if oldest_seq is distinct from p_first_seq then
    raise exception 'audit_archive_segment: a segment must start at the oldest event (seq %)', oldest_seq
      using errcode = '22023';
  end if;
  select count(*), min(e.occurred_at), max(e.occurred_at),
         sha256(convert_to(string_agg(
           '{"hash":"' || encode(e.hash, 'hex') || '","prev_hash":"' || encode(e.prev_hash, 'hex')
           || '","event":' || e.canonical || '}' || chr(10), '' order by e.seq), 'UTF8'))
    into n, oldest, newest, digest
    from audit_events e where e.tenant_id = p_tenant and e.seq between p_first_seq and p_last_seq;
  if n <> p_last_seq - p_first_seq + 1 then
    raise exception 'audit_archive_segment: events % to % are not all present', p_first_seq, p_last_seq
      using errcode = '22023';
  end if;
  if newest >= cutoff then
    raise exception 'audit_archive_segment: events % to % are not all older than the hot window', p_first_seq, p_last_seq
      using errcode = '42501';
  end if;
  if p_sha256 is distinct from digest then
    raise exception 'audit_archive_segment: the segment digest is not the digest of these events' using errcode = '22023';
  end if;
  select e.prev_hash into first_prev from audit_events e where e.tenant_id = p_tenant and e.seq = p_first_seq;
  select e.hash into last_h from audit_events e where e.tenant_id = p_tenant and e.seq = p_last_seq;
  select s.last_seq, s.last_hash into previous from audit_archive_segments s
    where s.tenant_id = p_tenant order by s.first_seq desc limit 1;
  if found then
    if previous.last_seq + 1 <> p_first_seq or previous.last_hash <> first_prev then
      raise exception 'audit_archive_segment: the segment does not continue the previous one' using errcode = '22023';
    end if;
  elsif p_first_seq <> 1 or first_prev <> '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea then
    raise exception 'audit_archive_segment: the first segment must start at seq 1' using errcode = '22023';
  end if;
  insert into audit_archive_segments (tenant_id, first_seq, last_seq, first_prev_hash, last_hash, sha256,
                                      first_ts, last_ts, file)
  values (p_tenant, p_first_seq, p_last_seq, first_prev, last_h, digest, oldest, newest,
          'segment-' || lpad(p_first_seq::text, 16, '0') || '-' || lpad(p_last_seq::text, 16, '0') || '.jsonl.gz');
  delete from audit_events e where e.tenant_id = p_tenant and e.seq between p_first_seq and p_last_seq;
  -- The event recording the move, in canonical (JCS) form: keys in order, and
  -- every value a number or a string that needs no escaping.
  canonical := format(
    '{"action":"audit.archived","actor":"system","data":{"event_count":%s,"first_prev_hash":"%s","first_seq":%s,'
    '"last_hash":"%s","last_seq":%s,"segment_sha256":"%s"},"seq":%s,"target":null,"tenant":"%s","ts":"%s","v":1}',
    n, encode(first_prev, 'hex'), p_first_seq, encode(last_h, 'hex'), p_last_seq, encode(digest, 'hex'),
    head.seq + 1, p_tenant, head.ts);
  perform enclave.audit_append(canonical, sha256(head.hash || convert_to(canonical, 'UTF8')));
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
  return head.seq + 1;
end $$;

-- Marks every segment whose newest event is past the cold window (never less
-- than 24 months) as deleted, appending audit.archive_deleted for each, and
-- returns them — with those deleted in the last 30 days, so a file removal
-- that failed is retried — for the caller to remove their files.
create function enclave.audit_archive_expire(p_cold_months integer)
  returns table (expired_tenant uuid, expired_first_seq bigint, expired_last_seq bigint, expired_file text)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  cutoff timestamptz := now() - make_interval(months => greatest(coalesce(p_cold_months, 24), 24));
  t uuid;
  s record;
  head record;
  canonical text;
begin
  for t in select h.tenant_id from audit_heads h order by h.tenant_id loop
    perform set_config('app.tenant_id', t::text, true);
    for s in select g.first_seq, g.last_seq, g.sha256, g.file, g.deleted_at from audit_archive_segments g
             where g.tenant_id = t and (g.deleted_at is null and g.last_ts < cutoff
                                         or g.deleted_at >= now() - interval '30 days')
             order by g.first_seq loop
      if s.deleted_at is null then
        perform pg_advisory_xact_lock(hashtext('enclave.audit_archive'), hashtext(t::text));
        update audit_archive_segments g set deleted_at = now() where g.tenant_id = t and g.first_seq = s.first_seq;
        select * into head from enclave.audit_lock_head();
        canonical := format(
          '{"action":"audit.archive_deleted","actor":"system","data":{"first_seq":%s,"last_seq":%s,'
          '"segment_sha256":"%s"},"seq":%s,"target":null,"tenant":"%s","ts":"%s","v":1}',
          s.first_seq, s.last_seq, encode(s.sha256, 'hex'), head.seq + 1, t, head.ts);
        perform enclave.audit_append(canonical, sha256(head.hash || convert_to(canonical, 'UTF8')));
      end if;
      expired_tenant := t;
      expired_first_seq := s.first_seq;
      expired_last_seq := s.last_seq;
      expired_file := s.file;
      return next;
    end loop;
  end loop;
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
end $$;

revoke all on function enclave.audit_archive_candidates(integer) from public;
revoke all on function enclave.audit_archive_segment(uuid, bigint, bigint, bytea, integer) from public;
revoke all on function enclave.audit_archive_expire(integer) from public;
grant execute on function enclave.audit_archive_candidates(integer) to enclave_app;
grant execute on function enclave.audit_archive_segment(uuid, bigint, bigint, bytea, integer) to enclave_app;
grant execute on function enclave.audit_archive_expire(integer) to enclave_app;
