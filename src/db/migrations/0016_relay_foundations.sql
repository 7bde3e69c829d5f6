-- The agent relay's first piece (RLY-1): whether an agent's A2A card is
-- published. Off by default; its owner turns it on (agent page or API).
-- An unpublished agent is, to the relay, the same as one that does not exist.
alter table agents add column card_published boolean not null default false;

-- The relay finds a published agent by its handle (platform-wide unique)
-- before it knows the tenant: this shows the published one with that handle
-- and nothing else.
create function enclave.relay_published_agent(p_handle text)
  returns table (tenant_id uuid, agent_id uuid)
  language sql stable security definer set search_path = enclave, pg_temp
  as $$ select tenant_id, id from agents where handle = p_handle and card_published $$;
revoke all on function enclave.relay_published_agent(text) from public;
grant execute on function enclave.relay_published_agent(text) to enclave_app;
