-- enclave.relay_audit_append_peer (0017) wrote any event a caller assembled
-- into the other tenant's chain, as long as the caller held a row of the
-- connection. It is narrowed here to what the relay records there: an event
-- whose action is a relay action (`relay.…`), whose target is this very
-- connection and whose tenant is the peer. Anything else is refused before
-- the peer's chain is touched. The body is otherwise the same.
create or replace function enclave.relay_audit_append_peer(
  p_id uuid, p_before_seq text, p_before_ts text, p_after_ts text, out seq bigint, out hash bytea
)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller uuid := enclave.current_tenant_id();
  peer uuid;
  event jsonb;
begin
  select c.peer_tenant_id into peer from relay_connections c where c.tenant_id = caller and c.id = p_id;
  if peer is null then
    raise exception 'relay_audit_append_peer: no such connection in the bound tenant' using errcode = '42501';
  end if;
  -- A placeholder seq and ts make the parts one JSON text to read the fields from; audit_append_event
  -- checks the real splice.
  begin
    event := (p_before_seq || '1' || p_before_ts || '1970-01-01T00:00:00.000Z' || p_after_ts)::jsonb;
  exception when others then
    raise exception 'relay_audit_append_peer: the event parts are not JSON' using errcode = '22023';
  end;
  if not coalesce(event ->> 'action' like 'relay.%' and event ->> 'target' = 'connection:' || p_id::text
                  and event ->> 'tenant' = peer::text, false) then
    raise exception 'relay_audit_append_peer: only relay events about this connection reach the peer chain'
      using errcode = '42501';
  end if;
  perform set_config('app.tenant_id', peer::text, true);
  select a.seq, a.hash into seq, hash from enclave.audit_append_event(p_before_seq, p_before_ts, p_after_ts) a;
  perform set_config('app.tenant_id', caller::text, true);
end $$;
