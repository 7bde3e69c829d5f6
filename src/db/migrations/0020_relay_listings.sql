-- The relay directory's listings (RLY-1): a published card appears in the
-- searchable directory only after an operator approved its listing in a
-- manual review.
--
-- A listing is the agent's own tenant's row, under FORCE RLS with the one
-- tenant policy: the agent's managers ask for it and withdraw it in their
-- tenant's transaction (src/relay/listings.ts). Its states:
--   pending   asked for, waiting for the operator
--   approved  reviewed and listed; approved_card holds the fingerprint of
--             the card's name, description and skills (the template) then
--   rejected  refused, with the operator's optional reason for the owner
--   withdrawn the owner took it back
--
-- The directory shows an agent while its card is published, its listing is
-- approved and its name, description and template still have the approved
-- fingerprint: unpublishing takes it out at once, re-publishing an unchanged
-- card puts it back without a new review, and a card changed since approval
-- waits (out of the directory) in the operator's queue for a new one.
--
-- The operator works across tenants, as `enclave` CLI commands do: the
-- SECURITY DEFINER functions below only READ (the review queue, and the
-- directory's public fields, never a tenant, owner or email), and each
-- decision is written through serviceQuery bound to the agent's tenant, so
-- the tenant policy still applies to the write and the decision is an
-- audit event on that tenant's chain, with the service_query record beside
-- it. enclave_app may call them for anyone: the routes and the CLI decide
-- who is the operator (users.is_operator; the console).

create table relay_listings (
  tenant_id uuid not null references tenants (id) on delete cascade,
  agent_id uuid not null,
  -- The directory's page position (with listed_at); nothing else names a listing.
  id uuid not null default gen_random_uuid() unique,
  state text not null default 'pending' check (state in ('pending', 'approved', 'rejected', 'withdrawn')),
  reason text check (length(reason) between 1 and 500),
  requested_at timestamptz not null default now(),
  decided_at timestamptz,
  listed_at timestamptz,
  approved_card text,
  primary key (tenant_id, agent_id),
  check (state <> 'approved' or (listed_at is not null and approved_card is not null)),
  foreign key (tenant_id, agent_id) references agents (tenant_id, id) on delete cascade
);
create index relay_listings_directory on relay_listings (listed_at desc, id desc) where state = 'approved';
create index relay_listings_queue on relay_listings (requested_at, agent_id) where state in ('pending', 'approved');
alter table relay_listings enable row level security;
alter table relay_listings force row level security;
create policy tenant_isolation on relay_listings
  using (tenant_id = enclave.current_tenant_id())
  with check (tenant_id = enclave.current_tenant_id());
grant select, insert, update on relay_listings to enclave_app;
-- The functions below run as enclave_owner, which FORCE RLS holds to the
-- tenant policy too: this lets them (and only them: enclave_app is not the
-- owner) read every tenant's listings, as agents_definer (0008) does for agents.
create policy relay_listings_definer on relay_listings for select to enclave_owner using (true);

-- What an approval is of: the card's words and skills (its template).
create function enclave.relay_card_fingerprint(p_name text, p_description text, p_template text) returns text
  language sql immutable parallel safe set search_path = pg_catalog, pg_temp
  as $$ select md5(json_build_array(p_name, p_description, p_template)::text) $$;
grant execute on function enclave.relay_card_fingerprint(text, text, text) to enclave_app;

-- The operator's review queue: published agents whose listing is pending, or
-- approved for a card that has changed since ('changed'); oldest first. With
-- p_handle, that one agent's entry, if it waits.
create function enclave.relay_listing_queue(p_handle text, p_limit integer)
  returns table (
    tenant_id uuid, agent_id uuid, handle text, name text, description text, template_id text,
    requested_at timestamptz, review text
  )
  language sql stable security definer set search_path = enclave, pg_temp
  as $$
    select l.tenant_id, l.agent_id, a.handle, a.name, a.description, a.template_id, l.requested_at,
           case when l.state = 'pending' then 'new' else 'changed' end
    from relay_listings l join agents a on a.tenant_id = l.tenant_id and a.id = l.agent_id
    where a.card_published
      and (p_handle is null or a.handle = p_handle)
      and (l.state = 'pending'
           or (l.state = 'approved'
               and l.approved_card <> enclave.relay_card_fingerprint(a.name, a.description, a.template_id)))
    order by l.requested_at, l.agent_id
    limit least(greatest(p_limit, 1), 1000)
  $$;
revoke all on function enclave.relay_listing_queue(text, integer) from public;
grant execute on function enclave.relay_listing_queue(text, integer) to enclave_app;

-- The directory: listed agents' public fields, newest listing first, after
-- (p_after_at, p_after_id). p_query (already bounded and lowercased by the
-- caller) matches handle, name or description as a substring; p_templates
-- are the templates whose skill text matches it (the catalog is not in the
-- database).
create function enclave.relay_directory(
  p_query text, p_templates text[], p_after_at timestamptz, p_after_id uuid, p_limit integer
) returns table (
    id uuid, handle text, name text, description text, template_id text, updated_at timestamptz,
    listed_at timestamptz
  )
  language sql stable security definer set search_path = enclave, pg_temp
  as $$
    select l.id, a.handle, a.name, a.description, a.template_id, a.updated_at, l.listed_at
    from relay_listings l join agents a on a.tenant_id = l.tenant_id and a.id = l.agent_id
    where l.state = 'approved' and a.card_published
      and l.approved_card = enclave.relay_card_fingerprint(a.name, a.description, a.template_id)
      and (p_after_at is null or (l.listed_at, l.id) < (p_after_at, p_after_id))
      and (p_query is null
           or strpos(lower(a.handle || ' ' || a.name || ' ' || a.description), p_query) > 0
           or a.template_id = any (p_templates))
    order by l.listed_at desc, l.id desc
    limit least(greatest(p_limit, 1), 101)
  $$;
revoke all on function enclave.relay_directory(text, text[], timestamptz, uuid, integer) from public;
grant execute on function enclave.relay_directory(text, text[], timestamptz, uuid, integer) to enclave_app;
