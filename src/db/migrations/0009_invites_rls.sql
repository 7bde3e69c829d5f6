-- Invites under row-level security (TEN-1, TEN-6), and invites that prove an
-- address (ACC-1).
--
-- A member invite belongs to the tenant it joins. Signup and operator invites
-- create their tenant, so they have none yet: they belong to the platform
-- (the all-zero tenant, as their audit events do). Someone holding a link has
-- no session: the invites_lookup policy shows the one row whose token hash
-- equals app.lookup (see src/db/lookup.ts), read-only, so the signup form can
-- say whether the link is usable. Using it goes through enclave.invite_redeem
-- below, the only way to write an invite outside its own tenant.

alter table invites enable row level security;
alter table invites force row level security;
create policy tenant_isolation on invites
  using (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) = enclave.current_tenant_id())
  with check (coalesce(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) = enclave.current_tenant_id());
create policy invites_lookup on invites for select using (token_hash = enclave.current_lookup());

-- A member invite is mailed by a job that mints its token (as one-time links
-- are): until then it has no token, and the token exists only in the mail.
-- mailed_at records that it went out; only such an invite proves its address.
alter table invites alter column token_hash drop not null;
alter table invites add column mailed_at timestamptz;

-- Signup claims the invite before it inserts the user the claim names, in
-- the same transaction: the reference is checked at commit.
alter table invites alter constraint invites_used_by_fkey deferrable initially deferred;

-- Claims a pending invite by its token hash for a user about to be created,
-- and returns only what signup needs; no row if the invite is not pending.
-- Security definer, because a signup invite belongs to the platform while
-- signup runs bound to the tenant it creates. The invite's tenant is bound
-- for the one update (so the tenant policy still applies) and the caller's
-- settings are restored before returning.
create function enclave.invite_redeem(p_token_hash text, p_user_id uuid)
  returns table (invite_id uuid, invite_kind text, invite_tenant_id uuid, invite_email text, mailed boolean)
  language plpgsql security definer set search_path = enclave, pg_temp
  as $$
declare
  caller_tenant text := coalesce(current_setting('app.tenant_id', true), '');
  caller_lookup text := coalesce(current_setting('app.lookup', true), '');
  owner_tenant uuid;
begin
  perform set_config('app.lookup', p_token_hash, true);
  select coalesce(i.tenant_id, '00000000-0000-0000-0000-000000000000'::uuid) into owner_tenant
    from invites i where i.token_hash = p_token_hash;
  perform set_config('app.lookup', '', true);
  if owner_tenant is not null then
    perform set_config('app.tenant_id', owner_tenant::text, true);
    return query
      update invites i set used_at = now(), used_by = p_user_id
      where i.token_hash = p_token_hash and i.used_at is null and i.revoked_at is null and i.expires_at > now()
      returning i.id, i.kind, i.tenant_id, i.email, i.mailed_at is not null;
  end if;
  perform set_config('app.tenant_id', caller_tenant, true);
  perform set_config('app.lookup', caller_lookup, true);
end $$;

revoke all on function enclave.invite_redeem(text, uuid) from public;
grant execute on function enclave.invite_redeem(text, uuid) to enclave_app;
