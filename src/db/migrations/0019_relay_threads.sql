-- Relay threads (RLY-3, RLY-4, RLY-9): the conversations a connection's
-- relay token opens with the target agent.
--
-- A thread and its messages live in the TARGET's tenant only, beside the
-- incoming connection row the relay token resolves to: the data plane binds
-- that tenant (src/relay/threads.ts) and works under its ordinary policy.
-- The requester's tenant holds nothing of a thread. Its user reaches one only
-- with a thread access token (enc_thread_…), minted from their session
-- through enclave.relay_thread_token_issue below, which checks their own
-- outgoing row of the thread's connection.
--
-- Message payloads (`body`) are deleted 30 days after creation (RLY-9);
-- everything else (ids, authors, timestamps, states, sizes) stays.

create table relay_threads (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null references tenants (id) on delete cascade,
  connection_id uuid not null,
  -- The target agent: the incoming row's agent.
  agent_id uuid not null,
  -- The requesting agent's handle (null: a person), copied from the connection for the envelope (RLY-8).
  requester_handle text,
  state text not null default 'open' check (state in ('open', 'closed', 'revoked')),
  message_count integer not null default 0 check (message_count >= 0),
  payload_bytes bigint not null default 0 check (payload_bytes >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  closed_at timestamptz,
  primary key (tenant_id, id),
  unique (id),
  foreign key (tenant_id, connection_id) references relay_connections (tenant_id, id) on delete cascade,
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index relay_threads_page on relay_threads (tenant_id, updated_at, id);
create index relay_threads_connection on relay_threads (tenant_id, connection_id) where state = 'open';
alter table relay_threads enable row level security;
alter table relay_threads force row level security;
create policy tenant_isolation on relay_threads
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update on relay_threads to enclave_app;
-- enclave.relay_thread_token_issue finds a thread by id before it binds the thread's tenant.
create policy relay_threads_definer on relay_threads for select to enclave_owner using (true);

create table relay_messages (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  thread_id uuid not null,
  -- 1, 2, … within the thread, in the order written.
  seq integer not null check (seq > 0),
  -- caller: the relay token's holder; agent: the target agent's answer; owner: a person of the target's tenant.
  author text not null check (author in ('caller', 'agent', 'owner')),
  -- The owner's user, for author 'owner'.
  author_user_id uuid,
  -- The caller message an agent's answer replies to: one answer per message, however often delivery is retried.
  reply_to uuid,
  -- The payload: null once deleted by retention (RLY-9).
  body text check (octet_length(body) <= 65536),
  body_bytes integer not null check (body_bytes between 0 and 65536),
  -- Caller messages only: queued (waits for the target's instance), delivered, failed (the agent refused it).
  delivery text check (delivery in ('queued', 'delivered', 'failed')),
  delivery_attempts integer not null default 0,
  delivered_at timestamptz,
  payload_deleted_at timestamptz,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  unique (id),
  unique (tenant_id, thread_id, seq),
  foreign key (tenant_id, thread_id) references relay_threads (tenant_id, id) on delete cascade,
  check ((author = 'caller') = (delivery is not null)),
  check ((author = 'owner') = (author_user_id is not null)),
  check (author = 'agent' or reply_to is null),
  check (body is not null or payload_deleted_at is not null)
);
create unique index relay_messages_one_answer on relay_messages (tenant_id, reply_to) where reply_to is not null;
create index relay_messages_queued on relay_messages (tenant_id, thread_id) where delivery = 'queued';
-- The retention sweep finds payloads past 30 days without reading the rest.
create index relay_messages_retention on relay_messages (tenant_id, created_at) where body is not null;
alter table relay_messages enable row level security;
alter table relay_messages force row level security;
create policy tenant_isolation on relay_messages
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update on relay_messages to enclave_app;

-- Thread access tokens (RLY-4): 60 minutes, for reading a thread, the
-- owner's response and closing. `holder` says whose: the target's side
-- (owner) or the requester (participant).
create table relay_thread_tokens (
  id uuid not null default gen_random_uuid(),
  tenant_id uuid not null,
  thread_id uuid not null,
  holder text not null check (holder in ('owner', 'participant')),
  -- Who minted it: a user of the target's tenant (owner) or of the requester's (participant; no foreign key).
  minted_by uuid not null,
  token_hash text not null unique check (token_hash ~ '^[0-9a-f]{64}$'),
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  primary key (tenant_id, id),
  foreign key (tenant_id, thread_id) references relay_threads (tenant_id, id) on delete cascade,
  check (expires_at <= created_at + interval '60 minutes')
);
create index relay_thread_tokens_expiry on relay_thread_tokens (tenant_id, expires_at);
alter table relay_thread_tokens enable row level security;
alter table relay_thread_tokens force row level security;
create policy tenant_isolation on relay_thread_tokens
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
-- A thread token is resolved before any tenant is known (src/db/lookup.ts).
create policy relay_thread_tokens_lookup on relay_thread_tokens for select
  using (token_hash = enclave.current_lookup());
grant select, insert, delete on relay_thread_tokens to enclave_app;

-- A participant's thread token, minted from the requester's session: the
-- bound tenant (the requester's) must hold the outgoing row of the thread's
-- connection, asked for by p_user_id. outcome: 'ok' or 'not_found' (no such
-- thread, or not this user's: the same answer). The token row is written in
-- the thread's tenant, whose binding is restored to the caller's after.
create function enclave.relay_thread_token_issue(p_thread_id uuid, p_user_id uuid, p_token_hash text)
  returns table (outcome text, expires_at timestamptz)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller uuid := enclave.current_tenant_id();
  thread relay_threads;
begin
  if caller is null then
    raise exception 'relay_thread_token_issue: no tenant bound' using errcode = '42501';
  end if;
  select * into thread from relay_threads t where t.id = p_thread_id;
  if thread.id is null or not exists (
    select 1 from relay_connections c
    where c.tenant_id = caller and c.id = thread.connection_id and c.side = 'outgoing'
      and c.peer_tenant_id = thread.tenant_id and c.requester_user_id = p_user_id) then
    return query select 'not_found'::text, null::timestamptz;
    return;
  end if;
  perform set_config('app.tenant_id', thread.tenant_id::text, true);
  insert into relay_thread_tokens (tenant_id, thread_id, holder, minted_by, token_hash, expires_at)
    values (thread.tenant_id, p_thread_id, 'participant', p_user_id, p_token_hash, now() + interval '60 minutes');
  perform set_config('app.tenant_id', caller::text, true);
  return query select 'ok'::text, now() + interval '60 minutes';
end $$;
revoke all on function enclave.relay_thread_token_issue(uuid, uuid, text) from public;
grant execute on function enclave.relay_thread_token_issue(uuid, uuid, text) to enclave_app;

-- Whether connection p_id of the bound tenant is an approved incoming one,
-- share-locking its row for the rest of the transaction: a thread write
-- holds its grant this way, so a revoke committing meanwhile waits for the
-- write and then marks the new thread revoked too (RLY-3). A definer
-- function because enclave_app may not lock rows it may not update.
create function enclave.relay_grant_hold(p_id uuid) returns boolean
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
begin
  perform 1 from relay_connections c
    where c.tenant_id = enclave.current_tenant_id() and c.id = p_id and c.side = 'incoming'
      and c.state = 'approved'
    for share;
  return found;
end $$;
revoke all on function enclave.relay_grant_hold(uuid) from public;
grant execute on function enclave.relay_grant_hold(uuid) to enclave_app;
