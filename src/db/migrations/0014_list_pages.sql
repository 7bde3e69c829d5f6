-- Reads that do not grow with the tenant (#13).
--
-- Every list of the JSON API is read a page at a time, in keyset order:
-- (created_at, id) or, for egress records, (started_at, id), after the last
-- row of the previous page (src/http/page-cursor.ts). Each index below serves
-- one list with the tenant first, as row-level security filters on it, so a
-- page is an index range of at most limit + 1 rows however long the list is.
-- Each replaces an index that is its prefix.

create index agents_tenant_page on agents (tenant_id, created_at, id);
drop index agents_tenant;

create index users_tenant_page on users (tenant_id, created_at, id);
drop index users_tenant;

create index api_tokens_user_page on api_tokens (tenant_id, user_id, created_at, id);
drop index api_tokens_user;

create index sessions_user_page on sessions (tenant_id, user_id, created_at, id);
drop index sessions_user;

create index invites_tenant_page on invites (tenant_id, created_at, id) where tenant_id is not null;
drop index invites_tenant;

create index egress_connections_agent_page on egress_connections (tenant_id, agent_id, started_at desc, id desc);
drop index egress_connections_agent;

-- The audit page (src/audit/page-routes.ts) filters by action and lists the
-- actions present. With this index, a filter is an index range in seq order
-- (one that matches nothing reads no rows), and the list of actions is a skip
-- scan: one index probe per distinct action, not a pass over the log.
create index audit_events_action on audit_events (tenant_id, action, seq);
