-- The checkpoint log stored as its perfect subtrees (AUD-4): node (level, idx)
-- is the RFC 6962 hash of leaves [idx · 2^level, (idx + 1) · 2^level). A node
-- is written once, when its last leaf is appended, so appending k leaves
-- writes about 2k nodes, and a root or a proof reads O(log n) of them
-- (src/audit/merkle-nodes.ts). Until now every checkpoint and every proof read
-- all leaves ever appended. The nodes at levels 0, 8, 16, … are the hashes
-- the C2SP tlog tiles carry, served at /audit/tile/.
--
-- checkpoint_record() now recomputes the root of the size it is given from
-- these nodes and refuses any other root, so a checkpoint over a made-up
-- root cannot be recorded.

create table checkpoint_nodes (
  level smallint not null check (level between 0 and 62),
  idx bigint not null check (idx >= 0),
  hash bytea not null check (length(hash) = 32),
  primary key (level, idx)
);
grant select on checkpoint_nodes to enclave_app;

-- The nodes of the leaves already in the log, level by level.
insert into checkpoint_nodes (level, idx, hash) select 0, l.idx, l.leaf_hash from checkpoint_leaves l;
do $$
declare
  lvl smallint := 0;
  added bigint;
begin
  loop
    insert into checkpoint_nodes (level, idx, hash)
    select lvl + 1, a.idx / 2, sha256('\x01'::bytea || a.hash || b.hash)
    from checkpoint_nodes a join checkpoint_nodes b on b.level = lvl and b.idx = a.idx + 1
    where a.level = lvl and a.idx % 2 = 0;
    get diagnostics added = row_count;
    exit when added = 0;
    lvl := lvl + 1;
  end loop;
end $$;

-- Stores leaf p_idx's hash and every node it completes: while the node just
-- written is a right child, its parent is complete too.
create function enclave.checkpoint_add_leaf_node(p_idx bigint, p_hash bytea) returns void
  language plpgsql set search_path = enclave, pg_temp
  as $$
declare
  lvl smallint := 0;
  i bigint := p_idx;
  h bytea := p_hash;
  left_hash bytea;
begin
  insert into checkpoint_nodes (level, idx, hash) values (0, p_idx, p_hash);
  while i % 2 = 1 loop
    select n.hash into strict left_hash from checkpoint_nodes n where n.level = lvl and n.idx = i - 1;
    h := sha256('\x01'::bytea || left_hash || h);
    lvl := lvl + 1;
    i := i / 2;
    insert into checkpoint_nodes (level, idx, hash) values (lvl, i, h);
  end loop;
end $$;
revoke all on function enclave.checkpoint_add_leaf_node(bigint, bytea) from public;

-- The RFC 6962 root of the first p_size leaves: the perfect subtrees at the
-- set bits of p_size, left to right, folded from the right.
create function enclave.checkpoint_root(p_size bigint) returns bytea
  language plpgsql stable set search_path = enclave, pg_temp
  as $$
declare
  subtrees bytea[] := '{}';
  start bigint := 0;
  node bytea;
  root bytea;
begin
  if p_size is null or p_size < 0 then
    raise exception 'checkpoint_root: no tree of size %', p_size using errcode = '22023';
  end if;
  if p_size = 0 then
    return sha256(''::bytea);
  end if;
  for lvl in reverse 62 .. 0 loop
    if (p_size >> lvl) & 1 = 1 then
      select n.hash into node from checkpoint_nodes n where n.level = lvl and n.idx = start >> lvl;
      if not found then
        raise exception 'checkpoint_root: the log has fewer than % leaves', p_size using errcode = '22023';
      end if;
      subtrees := array_append(subtrees, node);
      start := start + (1::bigint << lvl);
    end if;
  end loop;
  root := subtrees[cardinality(subtrees)];
  for i in reverse cardinality(subtrees) - 1 .. 1 loop
    root := sha256('\x01'::bytea || subtrees[i] || root);
  end loop;
  return root;
end $$;
grant execute on function enclave.checkpoint_root(bigint) to enclave_app;

-- The head map (AUD-8): each checkpoint also commits to every tenant's head.
--
-- A tenant's leaves prove what its chain held at each checkpoint, but nothing
-- proved that a bundle lists all of them: someone who can write the database
-- could delete a tenant's newest events, roll its head back and re-tag its
-- newer leaves to another tenant (their hashes, and so the signed roots,
-- unchanged), and the bundle would verify. The head map closes that: a Merkle
-- tree (RFC 6962 hashing) over every tenant's newest leaf, in tenant id
-- order, whose root the checkpoint note carries in an extension line. A
-- bundle proves its tenant's entry, and the verifier requires that entry to
-- be the tenant's newest listed leaf. docs/audit-format.md §2 has the format.
--
-- checkpoint_tenant_heads keeps each tenant's newest leaf, written only by
-- checkpoint_append_leaves() (so a head map costs O(tenants), never a scan of
-- every leaf ever appended), and the map's root and proofs are computed here,
-- off the server's event loop.

create table checkpoint_tenant_heads (
  tenant_id uuid primary key references tenants (id) on delete restrict,
  idx bigint not null check (idx >= 0),
  seq bigint not null check (seq > 0),
  head_hash bytea not null check (length(head_hash) = 32)
);
grant select on checkpoint_tenant_heads to enclave_app;

insert into checkpoint_tenant_heads (tenant_id, idx, seq, head_hash)
select distinct on (l.tenant_id) l.tenant_id, l.idx, l.seq, l.head_hash
from checkpoint_leaves l order by l.tenant_id, l.idx desc;

-- As before (0004), and each leaf's nodes stored as it is appended, and each
-- new leaf made its tenant's head map entry. A tenant's previous leaf is its
-- entry (by primary key), not searched for among every leaf ever appended.
create or replace function enclave.checkpoint_append_leaves()
  returns table (leaf_index bigint, leaf_tenant uuid, leaf_seq bigint, previous_seq bigint)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  next_idx bigint;
  moved record;
  hash bytea;
begin
  -- One checkpoint at a time: the checkpointer and `enclave audit checkpoint` may race.
  perform pg_advisory_xact_lock(hashtext('enclave.checkpoint'));
  select coalesce(max(l.idx) + 1, 0) into next_idx from checkpoint_leaves l;
  for moved in
    select h.tenant_id, h.seq, h.hash, p.seq as previous_seq
    from audit_heads h
    left join checkpoint_tenant_heads p on p.tenant_id = h.tenant_id
    where h.seq > 0 and (p.seq is null or p.seq <> h.seq or p.head_hash <> h.hash)
    order by h.tenant_id
  loop
    hash := sha256('\x0001'::bytea || uuid_send(moved.tenant_id) || int8send(moved.seq) || moved.hash);
    insert into checkpoint_leaves (idx, tenant_id, seq, head_hash, leaf_hash)
    values (next_idx, moved.tenant_id, moved.seq, moved.hash, hash);
    perform enclave.checkpoint_add_leaf_node(next_idx, hash);
    insert into checkpoint_tenant_heads (tenant_id, idx, seq, head_hash)
    values (moved.tenant_id, next_idx, moved.seq, moved.hash)
    on conflict (tenant_id) do update set idx = excluded.idx, seq = excluded.seq, head_hash = excluded.head_hash;
    leaf_index := next_idx;
    leaf_tenant := moved.tenant_id;
    leaf_seq := moved.seq;
    previous_seq := moved.previous_seq;
    next_idx := next_idx + 1;
    return next;
  end loop;
end $$;

-- As before (0004), and the root must be the root of the stored leaves.
create or replace function enclave.checkpoint_record(p_size bigint, p_root bytea, p_note text) returns boolean
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  leaves bigint;
  latest bigint;
  existing record;
begin
  perform pg_advisory_xact_lock(hashtext('enclave.checkpoint'));
  select coalesce(max(l.idx) + 1, 0) into leaves from checkpoint_leaves l;
  if p_size is distinct from leaves then
    raise exception 'checkpoint_record: size % is not the number of leaves %', p_size, leaves using errcode = '22023';
  end if;
  if p_root is distinct from enclave.checkpoint_root(p_size) then
    raise exception 'checkpoint_record: the root is not the root of the log''s % leaves', p_size using errcode = '22023';
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

-- The head map of the log as it stands: its size, its root, and, for
-- p_tenant, the index of its entry, the entry, and its RFC 6962 inclusion
-- proof (leaf first). Entry hash: SHA-256(0x00 ‖ 0x02 ‖ tenant ‖ seq ‖ head hash).
-- The tree is built bottom-up, a last node without a partner moving up
-- unchanged, which is RFC 6962's tree (src/audit/merkle-levels.ts).
create function enclave.checkpoint_head_map(
  p_tenant uuid,
  out map_size bigint, out map_root bytea, out entry_index bigint, out entry_seq bigint, out entry_hash bytea,
  out proof bytea[]
)
  language plpgsql stable set search_path = enclave, pg_temp
  as $$
declare
  level bytea[];
  next bytea[];
  i bigint;
  n bigint;
  at bigint;
begin
  select coalesce(array_agg(sha256('\x0002'::bytea || uuid_send(h.tenant_id) || int8send(h.seq) || h.head_hash)
                            order by h.tenant_id), '{}'),
         count(*)
    into level, map_size
    from checkpoint_tenant_heads h;
  select r.n - 1, h.seq, h.head_hash into entry_index, entry_seq, entry_hash
    from (select t.tenant_id, row_number() over (order by t.tenant_id) as n from checkpoint_tenant_heads t) r
    join checkpoint_tenant_heads h on h.tenant_id = r.tenant_id
    where r.tenant_id = p_tenant;
  proof := '{}';
  if map_size = 0 then
    map_root := sha256(''::bytea);
    return;
  end if;
  at := entry_index;
  n := map_size;
  while n > 1 loop
    if at is not null and (at # 1) < n then
      proof := array_append(proof, level[(at # 1) + 1]);
    end if;
    next := '{}';
    i := 0;
    while i + 1 < n loop
      next := array_append(next, sha256('\x01'::bytea || level[i + 1] || level[i + 2]));
      i := i + 2;
    end loop;
    if n % 2 = 1 then
      next := array_append(next, level[n]);
    end if;
    level := next;
    n := (n + 1) / 2;
    at := at / 2;
  end loop;
  map_root := level[1];
end $$;
grant execute on function enclave.checkpoint_head_map(uuid) to enclave_app;
