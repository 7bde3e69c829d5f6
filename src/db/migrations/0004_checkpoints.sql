-- The checkpoint log (AUD-4, AUD-8): an append-only RFC 6962 Merkle tree
-- whose leaves commit to tenant chain heads, and the signed checkpoints over
-- it. Both tables are global: the log commits to every tenant's head so each
-- tenant can get an inclusion proof, and a leaf reveals only a head hash and
-- an event count (src/db/global-tables.ts). docs/audit-format.md has the format.
--
-- The app role reads both tables and writes neither: leaves are appended only
-- by checkpoint_append_leaves(), which builds each leaf from a real chain head,
-- and checkpoints are recorded only by checkpoint_record(), which refuses a
-- size that is not the number of leaves or a second checkpoint of one size.
-- (The root itself is computed and signed by the worker, which holds the key;
-- anyone with the leaves can recompute it, and the verifier does.)

create table checkpoint_leaves (
  idx bigint primary key check (idx >= 0),
  tenant_id uuid not null references tenants (id) on delete restrict,
  seq bigint not null check (seq > 0),
  head_hash bytea not null check (length(head_hash) = 32),
  -- SHA-256(0x00 || 0x01 || tenant uuid (16) || seq (int8, big-endian) || head_hash): src/audit/leaf.ts
  leaf_hash bytea not null check (length(leaf_hash) = 32),
  created_at timestamptz not null default now()
);
create index checkpoint_leaves_tenant on checkpoint_leaves (tenant_id, idx);
grant select on checkpoint_leaves to enclave_app;

create table checkpoints (
  size bigint primary key check (size >= 0),
  root bytea not null check (length(root) = 32),
  -- The C2SP signed note, exactly as published.
  note text not null,
  created_at timestamptz not null default now()
);
grant select on checkpoints to enclave_app;

-- Enumerating every tenant's head needs a way around FORCE RLS, which binds
-- the owner too. This policy lets enclave_owner, and no other role, read all
-- heads. At run time nothing connects as enclave_owner (its pool closes after
-- migrating), so it applies only inside the SECURITY DEFINER functions below
-- and in 0005_audit_retention.sql; enclave_app is not a member of
-- enclave_owner (TEN-2). The RLS gate admits exactly this shape: FOR SELECT,
-- TO enclave_owner only, named *_definer (src/db/rls-gate.ts).
create policy audit_heads_definer on audit_heads for select to enclave_owner using (true);

-- Appends one leaf for every tenant whose head differs from its latest leaf
-- (moved on, or — after tampering — moved back or rewritten: that too is
-- recorded, in public). Returns the leaves appended, with the seq of the
-- tenant's previous leaf so the caller can flag a head that went backwards.
create function enclave.checkpoint_append_leaves()
  returns table (leaf_index bigint, leaf_tenant uuid, leaf_seq bigint, previous_seq bigint)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  next_idx bigint;
begin
  -- One checkpoint at a time: the cron job and `enclave audit checkpoint` may race.
  perform pg_advisory_xact_lock(hashtext('enclave.checkpoint'));
  select coalesce(max(l.idx) + 1, 0) into next_idx from checkpoint_leaves l;
  return query
  with latest as (
    select distinct on (l.tenant_id) l.tenant_id, l.seq, l.head_hash
    from checkpoint_leaves l
    order by l.tenant_id, l.idx desc
  ), moved as (
    select h.tenant_id, h.seq, h.hash, p.seq as previous_seq
    from audit_heads h
    left join latest p on p.tenant_id = h.tenant_id
    where h.seq > 0 and (p.tenant_id is null or p.seq <> h.seq or p.head_hash <> h.hash)
  ), numbered as (
    select next_idx + row_number() over (order by m.tenant_id) - 1 as idx, m.tenant_id, m.seq, m.hash, m.previous_seq
    from moved m
  ), inserted as (
    insert into checkpoint_leaves (idx, tenant_id, seq, head_hash, leaf_hash)
    select n.idx, n.tenant_id, n.seq, n.hash,
           sha256('\x0001'::bytea || uuid_send(n.tenant_id) || int8send(n.seq) || n.hash)
    from numbered n
    returning checkpoint_leaves.idx
  )
  select n.idx, n.tenant_id, n.seq, n.previous_seq
  from inserted i join numbered n on n.idx = i.idx
  order by n.idx;
end $$;

-- Records a signed checkpoint of the whole log. Returns false if this exact
-- checkpoint was already recorded (a retried job), true if it is new.
create function enclave.checkpoint_record(p_size bigint, p_root bytea, p_note text) returns boolean
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  leaves bigint;
  latest bigint;
  existing record;
begin
  perform pg_advisory_xact_lock(hashtext('enclave.checkpoint'));
  select count(*) into leaves from checkpoint_leaves;
  if p_size is distinct from leaves then
    raise exception 'checkpoint_record: size % is not the number of leaves %', p_size, leaves using errcode = '22023';
  end if;
  select c.root, c.note into existing from checkpoints c where c.size = p_size;
  if found then
    if existing.root = p_root and existing.note = p_note then
      return false;
    end if;
    raise exception 'checkpoint_record: another checkpoint of size % exists', p_size using errcode = '23505';
  end if;
  select max(c.size) into latest from checkpoints c;
  if latest > p_size then
    raise exception 'checkpoint_record: size % is below the latest checkpoint %', p_size, latest using errcode = '22023';
  end if;
  -- The note's body is origin, size, base64 root: it must be the checkpoint of this size and root.
  if split_part(p_note, E'\n', 2) <> p_size::text or split_part(p_note, E'\n', 3) <> encode(p_root, 'base64') then
    raise exception 'checkpoint_record: the note does not carry this size and root' using errcode = '22023';
  end if;
  insert into checkpoints (size, root, note) values (p_size, p_root, p_note);
  return true;
end $$;

revoke all on function enclave.checkpoint_append_leaves() from public;
revoke all on function enclave.checkpoint_record(bigint, bytea, text) from public;
grant execute on function enclave.checkpoint_append_leaves() to enclave_app;
grant execute on function enclave.checkpoint_record(bigint, bytea, text) to enclave_app;
