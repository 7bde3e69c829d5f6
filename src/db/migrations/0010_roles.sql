-- Roles that mean something (#11 item 10): tenant users are owners, admins
-- or members (src/accounts/roles.ts says what each may do), and every agent
-- remembers who created it, because members manage only their own agents.

alter table users drop constraint users_role_check;
alter table users add constraint users_role_check check (role in ('owner', 'admin', 'member'));

-- Null once its creator is removed: then only owners and admins manage it.
alter table agents add column created_by uuid references users (id) on delete set null;

-- Existing agents: whoever asked for them at onboarding, else the tenant's
-- first owner. The tables force row-level security on their owner too, which
-- runs this file: the backfill spans every tenant, so it lifts FORCE for its
-- own statement only, inside this migration's transaction, where no other
-- session can see the gap.
alter table agents no force row level security;
alter table agent_provision_requests no force row level security;
alter table users no force row level security;
update agents a set created_by = coalesce(
  (select p.requested_by from agent_provision_requests p
   where p.agent_id = a.id and p.requested_by is not null order by p.created_at limit 1),
  (select u.id from users u where u.tenant_id = a.tenant_id and u.role = 'owner' order by u.created_at limit 1));
alter table agents force row level security;
alter table agent_provision_requests force row level security;
alter table users force row level security;
