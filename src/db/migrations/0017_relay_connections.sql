-- Relay connections and owner approval (RLY-2, RLY-3: the token's claim).
--
-- A connection links a requester (a signed-in user, acting for one of their
-- agents or for themselves) to a published agent of ANOTHER tenant, named by
-- its handle. It is seen by two tenants, and each sees it under its own
-- tenant policy: one row per side, sharing one connection id —
--   * `outgoing`, in the requester's tenant (agent_id: the requesting agent,
--     or null for a person);
--   * `incoming`, in the target's tenant (agent_id: the target agent; it
--     alone holds the relay token's hash).
-- Both rows are under FORCE RLS with the one tenant policy, and enclave_app
-- may only read them: every write goes through the SECURITY DEFINER
-- functions below, which check that the caller's bound tenant is the side
-- allowed to take that step, write their own side, bind the other side's
-- tenant for the one write there (so the tenant policy still applies, as in
-- enclave.invite_redeem) and restore the caller's binding. The two rows so
-- never disagree about the state.
--
--   request:  outgoing side (any tenant but the target's) → both rows, pending
--   approve / deny: incoming side, from pending
--   revoke:   incoming side, from pending or approved (at any time)
--   claim:    outgoing side, once, when approved: the token's hash is stored
--             on the incoming row, where the data plane looks it up
--
-- Rows are locked incoming first, then outgoing, in every function, so a
-- claim racing a revoke waits rather than deadlocks. A connection to an
-- agent of one's own tenant is refused as an unknown handle is: the relay is
-- for reaching other tenants' agents.
--
-- The data plane resolves a relay token before it knows any tenant: the
-- relay_connections_lookup policy shows the one incoming row whose token hash
-- equals app.lookup (src/db/lookup.ts), read-only.

create table relay_connections (
  id uuid not null,
  tenant_id uuid not null references tenants (id) on delete cascade,
  side text not null check (side in ('incoming', 'outgoing')),
  -- The tenant of the other row; never shown to anyone.
  peer_tenant_id uuid not null check (peer_tenant_id <> tenant_id),
  agent_id uuid,
  target_handle text not null,
  -- The requesting agent's handle when the request was made; null: a person asked for themselves.
  requester_handle text,
  -- A user of the requester's tenant (no foreign key: on the incoming row, another tenant's).
  requester_user_id uuid not null,
  message text not null check (length(message) between 1 and 2000),
  state text not null default 'pending' check (state in ('pending', 'approved', 'denied', 'revoked')),
  relay_token_hash text unique check (relay_token_hash ~ '^[0-9a-f]{64}$'),
  token_claimed_at timestamptz,
  decided_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (id, side),
  check (side = 'outgoing' or agent_id is not null),
  check (side = 'incoming' or relay_token_hash is null),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index relay_connections_page on relay_connections (tenant_id, side, created_at, id);
-- One open request (pending or approved) per requester (agent, or person) and target.
create unique index relay_connections_open on relay_connections
  (tenant_id, target_handle, coalesce(agent_id, requester_user_id))
  where side = 'outgoing' and state in ('pending', 'approved');
alter table relay_connections enable row level security;
alter table relay_connections force row level security;
create policy tenant_isolation on relay_connections
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
create policy relay_connections_lookup on relay_connections for select
  using (relay_token_hash = enclave.current_lookup());
grant select on relay_connections to enclave_app;

-- Asks for a connection from the bound tenant (the requester's) to the
-- published agent p_handle. outcome: 'created'; 'not_found' for an unknown or
-- unpublished handle or one of the caller's own tenant (the same answer);
-- 'exists' when this requester already has an open request to it.
create function enclave.relay_connection_request(
  p_handle text, p_user_id uuid, p_agent_id uuid, p_message text
) returns table (outcome text, connection_id uuid, target_tenant_id uuid)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller uuid := enclave.current_tenant_id();
  target_tenant uuid;
  target_agent uuid;
  asker_handle text;
  new_id uuid := gen_random_uuid();
begin
  if caller is null then
    raise exception 'relay_connection_request: no tenant bound' using errcode = '42501';
  end if;
  -- Both the user and the agent must be the caller's own (agents_definer shows every tenant's: filter).
  if not exists (select 1 from users u where u.id = p_user_id and u.tenant_id = caller) then
    raise exception 'relay_connection_request: the user is not of the bound tenant' using errcode = '42501';
  end if;
  if p_agent_id is not null then
    select a.handle into asker_handle from agents a where a.id = p_agent_id and a.tenant_id = caller;
    if asker_handle is null then
      raise exception 'relay_connection_request: the agent is not of the bound tenant' using errcode = '42501';
    end if;
  end if;
  select p.tenant_id, p.agent_id into target_tenant, target_agent from enclave.relay_published_agent(p_handle) p;
  if target_tenant is null or target_tenant = caller then
    return query select 'not_found'::text, null::uuid, null::uuid;
    return;
  end if;
  if exists (select 1 from relay_connections c
             where c.tenant_id = caller and c.side = 'outgoing' and c.target_handle = p_handle
               and coalesce(c.agent_id, c.requester_user_id) = coalesce(p_agent_id, p_user_id)
               and c.state in ('pending', 'approved')) then
    return query select 'exists'::text, null::uuid, null::uuid;
    return;
  end if;
  insert into relay_connections
    (id, tenant_id, side, peer_tenant_id, agent_id, target_handle, requester_handle, requester_user_id, message)
  values (new_id, caller, 'outgoing', target_tenant, p_agent_id, p_handle, asker_handle, p_user_id, p_message);
  perform set_config('app.tenant_id', target_tenant::text, true);
  insert into relay_connections
    (id, tenant_id, side, peer_tenant_id, agent_id, target_handle, requester_handle, requester_user_id, message)
  values (new_id, target_tenant, 'incoming', caller, target_agent, p_handle, asker_handle, p_user_id, p_message);
  perform set_config('app.tenant_id', caller::text, true);
  return query select 'created'::text, new_id, target_tenant;
end $$;
revoke all on function enclave.relay_connection_request(text, uuid, uuid, text) from public;
grant execute on function enclave.relay_connection_request(text, uuid, uuid, text) to enclave_app;

-- The target's decision, from the bound tenant, which must hold the incoming
-- row: p_state 'approved' or 'denied' (from pending) or 'revoked' (from
-- pending or approved). outcome: 'ok', 'not_found' (no such connection here),
-- 'wrong_side' (the caller holds the outgoing row) or 'state' (not allowed
-- from its present state; nothing changed).
create function enclave.relay_connection_decide(p_id uuid, p_state text)
  returns table (outcome text, state text)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller uuid := enclave.current_tenant_id();
  mine relay_connections;
begin
  if caller is null then
    raise exception 'relay_connection_decide: no tenant bound' using errcode = '42501';
  end if;
  if p_state not in ('approved', 'denied', 'revoked') then
    raise exception 'relay_connection_decide: unknown decision %', p_state using errcode = '22023';
  end if;
  select * into mine from relay_connections c where c.tenant_id = caller and c.id = p_id for update;
  if mine.id is null then
    return query select 'not_found'::text, null::text;
    return;
  end if;
  if mine.side <> 'incoming' then
    return query select 'wrong_side'::text, mine.state;
    return;
  end if;
  if not (mine.state = 'pending' or (p_state = 'revoked' and mine.state = 'approved')) then
    return query select 'state'::text, mine.state;
    return;
  end if;
  update relay_connections c set state = p_state, updated_at = now(),
    decided_at = case when p_state = 'revoked' then c.decided_at else now() end,
    revoked_at = case when p_state = 'revoked' then now() else null end
  where c.tenant_id = caller and c.id = p_id;
  perform set_config('app.tenant_id', mine.peer_tenant_id::text, true);
  update relay_connections c set state = p_state, updated_at = now(),
    decided_at = case when p_state = 'revoked' then c.decided_at else now() end,
    revoked_at = case when p_state = 'revoked' then now() else null end
  where c.tenant_id = mine.peer_tenant_id and c.id = p_id and c.side = 'outgoing';
  perform set_config('app.tenant_id', caller::text, true);
  return query select 'ok'::text, p_state;
end $$;
revoke all on function enclave.relay_connection_decide(uuid, text) from public;
grant execute on function enclave.relay_connection_decide(uuid, text) to enclave_app;

-- The requester's one claim of the relay token, from the bound tenant, which
-- must hold the outgoing row and be approved: stores p_token_hash on the
-- incoming row. outcome: 'ok'; 'not_found' (unknown, another side's, or not
-- approved: the same answer); 'not_requester' (another user of the
-- requester's tenant); 'claimed' (already claimed once).
create function enclave.relay_connection_claim(p_id uuid, p_user_id uuid, p_token_hash text)
  returns table (outcome text)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller uuid := enclave.current_tenant_id();
  mine relay_connections;
  theirs relay_connections;
begin
  if caller is null then
    raise exception 'relay_connection_claim: no tenant bound' using errcode = '42501';
  end if;
  select * into mine from relay_connections c where c.tenant_id = caller and c.id = p_id and c.side = 'outgoing';
  if mine.id is null then
    return query select 'not_found'::text;
    return;
  end if;
  -- Incoming first, then outgoing: the order every function here locks in.
  perform set_config('app.tenant_id', mine.peer_tenant_id::text, true);
  select * into theirs from relay_connections c
    where c.tenant_id = mine.peer_tenant_id and c.id = p_id and c.side = 'incoming' for update;
  perform set_config('app.tenant_id', caller::text, true);
  select * into mine from relay_connections c where c.tenant_id = caller and c.id = p_id for update;
  if theirs.id is null or theirs.state <> 'approved' or mine.state <> 'approved' then
    return query select 'not_found'::text;
    return;
  end if;
  if mine.requester_user_id <> p_user_id then
    return query select 'not_requester'::text;
    return;
  end if;
  if mine.token_claimed_at is not null or theirs.relay_token_hash is not null then
    return query select 'claimed'::text;
    return;
  end if;
  update relay_connections c set token_claimed_at = now(), updated_at = now()
    where c.tenant_id = caller and c.id = p_id;
  perform set_config('app.tenant_id', mine.peer_tenant_id::text, true);
  update relay_connections c set relay_token_hash = p_token_hash, token_claimed_at = now(), updated_at = now()
    where c.tenant_id = mine.peer_tenant_id and c.id = p_id and c.side = 'incoming';
  perform set_config('app.tenant_id', caller::text, true);
  return query select 'ok'::text;
end $$;
revoke all on function enclave.relay_connection_claim(uuid, uuid, text) from public;
grant execute on function enclave.relay_connection_claim(uuid, uuid, text) to enclave_app;

-- Appends an event about connection p_id to the chain of the tenant on its
-- other side (AUD-1: requests, decisions, claims and revokes are on both
-- chains). Only a tenant holding a row of p_id reaches the other's chain,
-- and only that one; the caller's binding is restored.
create function enclave.relay_audit_append_peer(
  p_id uuid, p_before_seq text, p_before_ts text, p_after_ts text, out seq bigint, out hash bytea
)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller uuid := enclave.current_tenant_id();
  peer uuid;
begin
  select c.peer_tenant_id into peer from relay_connections c where c.tenant_id = caller and c.id = p_id;
  if peer is null then
    raise exception 'relay_audit_append_peer: no such connection in the bound tenant' using errcode = '42501';
  end if;
  perform set_config('app.tenant_id', peer::text, true);
  select a.seq, a.hash into seq, hash from enclave.audit_append_event(p_before_seq, p_before_ts, p_after_ts) a;
  perform set_config('app.tenant_id', caller::text, true);
end $$;
revoke all on function enclave.relay_audit_append_peer(uuid, text, text, text) from public;
grant execute on function enclave.relay_audit_append_peer(uuid, text, text, text) to enclave_app;
