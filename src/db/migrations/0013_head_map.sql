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

-- As in 0012, and each new leaf becomes its tenant's entry.
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
