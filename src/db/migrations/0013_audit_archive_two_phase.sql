-- Archiving in two phases (AUD-7). Until now one call recorded a segment and
-- deleted its rows, so a caller that never wrote the segment file (or crashed
-- before its bytes reached the disk) lost the events. Now:
--
--   1. the caller writes and fsyncs the segment file, then records its digest
--      with audit_archive_record(), which recomputes it from the rows;
--   2. the caller reads the file back and gives the digest it read to
--      audit_archive_delete_rows(), which deletes the rows only for a segment
--      recorded, with that digest, by a transaction that has committed.
--
-- A segment between the two phases is pending: its rows are still in the
-- database, bundles export them as rows, and the next retention run finishes
-- it. The database cannot read the archive directory, so a caller that lies
-- about the file can still remove rows; a bundle then lacks the segment and
-- fails verification unless an audit.archive_deleted event past the cold
-- window accounts for it (docs/audit-format.md §4, §5).

alter table audit_archive_segments add column rows_deleted_at timestamptz;
alter table audit_archive_segments add column recorded_xid xid8 not null default pg_current_xact_id();
-- Every segment recorded so far had its rows deleted in the same call. The
-- table's policy holds for its owner too, so each tenant is bound in turn.
do $$
declare
  t uuid;
begin
  for t in select h.tenant_id from audit_heads h loop
    perform set_config('app.tenant_id', t::text, true);
    update audit_archive_segments s set rows_deleted_at = s.archived_at where s.tenant_id = t;
  end loop;
  perform set_config('app.tenant_id', '', true);
end $$;
alter table audit_archive_segments add check (deleted_at is null or rows_deleted_at is not null);

drop function enclave.audit_archive_segment(uuid, bigint, bigint, bytea, integer);
drop function enclave.audit_archive_candidates(integer);

-- Deletes of audit rows: only rows past the 90-day floor, and only rows that a
-- segment whose rows are being deleted covers (never a pending one).
create or replace function enclave.audit_events_guard_delete() returns trigger
  language plpgsql set search_path = enclave, pg_temp
  as $$
begin
  if old.occurred_at >= now() - interval '90 days' then
    raise exception 'audit event % of tenant % is younger than 90 days and cannot be deleted', old.seq, old.tenant_id
      using errcode = '42501';
  end if;
  if not exists (
    select 1 from (
      select s.last_seq, s.rows_deleted_at from audit_archive_segments s
      where s.tenant_id = old.tenant_id and s.first_seq <= old.seq
      order by s.first_seq desc limit 1
    ) covering where covering.last_seq >= old.seq and covering.rows_deleted_at is not null
  ) then
    raise exception 'audit event % of tenant % is not covered by an archive manifest', old.seq, old.tenant_id
      using errcode = '42501';
  end if;
  return old;
end $$;

-- What retention has to do, tenant by tenant: first every pending segment
-- (archive_sha256 set: its file was written and its digest recorded, its rows
-- not yet deleted), then the range of events older than the hot window that
-- no segment covers yet (archive_sha256 null), for the caller to write.
create function enclave.audit_archive_candidates(p_hot_days integer)
  returns table (archive_tenant uuid, archive_first_seq bigint, archive_last_seq bigint, archive_sha256 bytea)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  cutoff timestamptz := now() - make_interval(days => greatest(coalesce(p_hot_days, 90), 90));
  t uuid;
  s record;
  covered bigint;
  lo bigint;
  hi bigint;
  young bigint;
begin
  -- Heads are readable across tenants through audit_heads_definer (0004); each
  -- tenant's rows are then read bound to that tenant, under its policy, and
  -- the caller's binding is restored at the end.
  for t in select h.tenant_id from audit_heads h order by h.tenant_id loop
    perform set_config('app.tenant_id', t::text, true);
    for s in select g.first_seq, g.last_seq, g.sha256 from audit_archive_segments g
             where g.tenant_id = t and g.rows_deleted_at is null order by g.first_seq loop
      archive_tenant := t;
      archive_first_seq := s.first_seq;
      archive_last_seq := s.last_seq;
      archive_sha256 := s.sha256;
      return next;
    end loop;
    select max(g.last_seq) into covered from audit_archive_segments g where g.tenant_id = t;
    select min(e.seq), max(e.seq) into lo, hi from audit_events e
      where e.tenant_id = t and e.seq > coalesce(covered, 0);
    continue when lo is null;
    select e.seq into young from audit_events e
      where e.tenant_id = t and e.seq >= lo and e.occurred_at >= cutoff order by e.seq limit 1;
    if found then
      hi := young - 1;
    end if;
    if hi >= lo then
      archive_tenant := t;
      archive_first_seq := lo;
      archive_last_seq := hi;
      archive_sha256 := null;
      return next;
    end if;
  end loop;
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
end $$;

-- Phase 1: records events first..last of a tenant as a pending segment, after
-- the caller has written and fsynced its file. p_sha256 is that file's
-- uncompressed digest; it must equal the digest recomputed here from the rows.
-- The segment must continue the tenant's previous one (pending or not), or
-- start at seq 1.
create function enclave.audit_archive_record(
  p_tenant uuid, p_first_seq bigint, p_last_seq bigint, p_sha256 bytea, p_hot_days integer
) returns void
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  cutoff timestamptz := now() - make_interval(days => greatest(coalesce(p_hot_days, 90), 90));
  next_seq bigint := 1;
  next_prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
  previous record;
  n bigint;
  oldest timestamptz;
  newest timestamptz;
  digest bytea;
  last_h bytea;
begin
  if p_tenant is null or p_first_seq is null or p_last_seq is null or p_last_seq < p_first_seq then
    raise exception 'audit_archive_record: give a tenant and a seq range' using errcode = '22023';
  end if;
  perform set_config('app.tenant_id', p_tenant::text, true);
  -- Waits for exports of this tenant (they hold this lock shared) and for other archivers.
  perform pg_advisory_xact_lock(hashtext('enclave.audit_archive'), hashtext(p_tenant::text));
  select s.last_seq, s.last_hash into previous from audit_archive_segments s
    where s.tenant_id = p_tenant order by s.first_seq desc limit 1;
  if found then
    next_seq := previous.last_seq + 1;
    next_prev := previous.last_hash;
  end if;
  if p_first_seq <> next_seq then
    raise exception 'audit_archive_record: a segment must start at the oldest event not yet archived (seq %)', next_seq
      using errcode = '22023';
  end if;
  select count(*), min(e.occurred_at), max(e.occurred_at),
         sha256(convert_to(string_agg(
           '{"hash":"' || encode(e.hash, 'hex') || '","prev_hash":"' || encode(e.prev_hash, 'hex')
           || '","event":' || e.canonical || '}' || chr(10), '' order by e.seq), 'UTF8'))
    into n, oldest, newest, digest
    from audit_events e where e.tenant_id = p_tenant and e.seq between p_first_seq and p_last_seq;
  if n <> p_last_seq - p_first_seq + 1 then
    raise exception 'audit_archive_record: events % to % are not all present', p_first_seq, p_last_seq
      using errcode = '22023';
  end if;
  if newest >= cutoff then
    raise exception 'audit_archive_record: events % to % are not all older than the hot window', p_first_seq, p_last_seq
      using errcode = '42501';
  end if;
  if p_sha256 is distinct from digest then
    raise exception 'audit_archive_record: the segment digest is not the digest of these events' using errcode = '22023';
  end if;
  if (select e.prev_hash from audit_events e where e.tenant_id = p_tenant and e.seq = p_first_seq) <> next_prev then
    raise exception 'audit_archive_record: the segment does not continue the previous one' using errcode = '22023';
  end if;
  select e.hash into last_h from audit_events e where e.tenant_id = p_tenant and e.seq = p_last_seq;
  insert into audit_archive_segments (tenant_id, first_seq, last_seq, first_prev_hash, last_hash, sha256,
                                      first_ts, last_ts, file)
  values (p_tenant, p_first_seq, p_last_seq, next_prev, last_h, digest, oldest, newest,
          'segment-' || lpad(p_first_seq::text, 16, '0') || '-' || lpad(p_last_seq::text, 16, '0') || '.jsonl.gz');
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
end $$;

-- Phase 2: deletes the rows of a pending segment. p_sha256 is the digest the
-- caller read back from the segment file; it must equal the recorded one, and
-- the recording transaction must have committed, so the digest is durable
-- before any row goes. Appends audit.archived and returns its seq.
create function enclave.audit_archive_delete_rows(p_tenant uuid, p_first_seq bigint, p_sha256 bytea)
  returns bigint
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := current_setting('app.tenant_id', true);
  s record;
  head record;
  canonical text;
begin
  if p_tenant is null or p_first_seq is null or p_sha256 is null then
    raise exception 'audit_archive_delete_rows: give a tenant, a segment''s first seq and its digest'
      using errcode = '22023';
  end if;
  perform set_config('app.tenant_id', p_tenant::text, true);
  perform pg_advisory_xact_lock(hashtext('enclave.audit_archive'), hashtext(p_tenant::text));
  select g.first_seq, g.last_seq, g.first_prev_hash, g.last_hash, g.sha256, g.rows_deleted_at, g.recorded_xid
    into s from audit_archive_segments g where g.tenant_id = p_tenant and g.first_seq = p_first_seq;
  if not found then
    raise exception 'audit_archive_delete_rows: no segment of tenant % starts at seq %', p_tenant, p_first_seq
      using errcode = '22023';
  end if;
  if s.rows_deleted_at is not null then
    raise exception 'audit_archive_delete_rows: the rows of segment % to % are already deleted', s.first_seq, s.last_seq
      using errcode = '22023';
  end if;
  if pg_xact_status(s.recorded_xid) is distinct from 'committed' then
    raise exception 'audit_archive_delete_rows: segment % to % was not recorded by an earlier, committed transaction',
      s.first_seq, s.last_seq using errcode = '42501';
  end if;
  if p_sha256 <> s.sha256 then
    raise exception 'audit_archive_delete_rows: the digest read from the segment file is not the recorded digest'
      using errcode = '22023';
  end if;
  select * into head from enclave.audit_lock_head();
  update audit_archive_segments g set rows_deleted_at = now() where g.tenant_id = p_tenant and g.first_seq = p_first_seq;
  delete from audit_events e where e.tenant_id = p_tenant and e.seq between s.first_seq and s.last_seq;
  -- The event recording the move, in canonical (JCS) form: keys in order, and
  -- every value a number or a string that needs no escaping.
  canonical := format(
    '{"action":"audit.archived","actor":"system","data":{"event_count":%s,"first_prev_hash":"%s","first_seq":%s,'
    '"last_hash":"%s","last_seq":%s,"segment_sha256":"%s"},"seq":%s,"target":null,"tenant":"%s","ts":"%s","v":1}',
    s.last_seq - s.first_seq + 1, encode(s.first_prev_hash, 'hex'), s.first_seq, encode(s.last_hash, 'hex'),
    s.last_seq, encode(s.sha256, 'hex'), head.seq + 1, p_tenant, head.ts);
  perform enclave.audit_append(canonical, sha256(head.hash || convert_to(canonical, 'UTF8')));
  perform set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
  return head.seq + 1;
end $$;

-- Expiry never touches a pending segment: its rows are still the only copy
-- the database vouches for.
create or replace function enclave.audit_archive_expire(p_cold_months integer)
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
             where g.tenant_id = t and g.rows_deleted_at is not null
               and (g.deleted_at is null and g.last_ts < cutoff or g.deleted_at >= now() - interval '30 days')
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
revoke all on function enclave.audit_archive_record(uuid, bigint, bigint, bytea, integer) from public;
revoke all on function enclave.audit_archive_delete_rows(uuid, bigint, bytea) from public;
grant execute on function enclave.audit_archive_candidates(integer) to enclave_app;
grant execute on function enclave.audit_archive_record(uuid, bigint, bigint, bytea, integer) to enclave_app;
grant execute on function enclave.audit_archive_delete_rows(uuid, bigint, bytea) to enclave_app;
