-- The public status page (RLY-10, src/status/) shows how many agent instances
-- run platform-wide. agent_instances is under FORCE RLS per tenant; this count
-- is the one figure read across tenants, through the owner's existing
-- read-only policy agent_instances_definer (0008_agent_runtime.sql), and it
-- returns a number alone: no tenant or agent id leaves the function.
create function enclave.status_running_instances() returns bigint
  language sql stable security definer set search_path = enclave, pg_temp
  as $$ select count(*) from agent_instances where state = 'running' $$;
revoke all on function enclave.status_running_instances() from public;
grant execute on function enclave.status_running_instances() to enclave_app;
