import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { LightMyRequestResponse } from 'fastify';
import { insertEgressRecords } from '../src/agents/egress/records.ts';
import { withTenant } from '../src/db/tenant.ts';
import { RELAY_TOKEN_SCHEME, THREAD_TOKEN_SCHEME } from '../src/http/openapi.ts';
import { decideListing } from '../src/relay/listings.ts';
import { createAccount, loginAgain, mintInvite, type TestAccount } from './helpers/accounts.ts';
import { insertAgent } from './helpers/agents.ts';
import { useTestApp } from './helpers/app.ts';
import { callbackDeliveryRow, callbackEndpoint, type TestEndpoint } from './helpers/callbacks.ts';
import { registeredRoutes } from './helpers/routes.ts';

// TEN-7. Attack: a signed-in user of tenant B names tenant A's identifiers
// on any API route — to read, change or delete A's things, or to learn from
// the answer that they exist. Nothing here lists routes by hand: every route
// comes from the app's own /openapi.json, so a new /api route is probed the
// day it is added, and an /api route missing from that document fails.
//
// For each credential B has (API token; session cookie with our Origin):
// - a route with path parameters is called with each of A's real ids (every
//   uuid of every A row, in every uuid parameter) and with random uuids: both
//   must be the same 404 problem;
// - a GET without path parameters (a list) must show none of A's ids;
// - every other route (mutations without path parameters) is called too,
//   with a body generated from its schema, and must show none of A's ids.
// A's rows, read as the database superuser, are digested before and after
// the whole run and must be identical. A's credentials are not used until
// the digest has been compared.

const ctx = useTestApp();

let alice: TestAccount;
let aliceMember: TestAccount;
let bob: TestAccount;
/** Each tenant's callback endpoint (RLY-7), by tenant id: the path id of its delivery list. */
const callbackEndpoints = new Map<string, TestEndpoint>();

/** A tenant's relay credentials (RLY-3, RLY-4): what it can present at /relay/v1. */
interface RelayKit {
  /** Its claimed relay token, for C's agent. */
  relayToken: string;
  /** A thread it started with that token (a participant's thread token is minted for it). */
  ownThread: string;
  /** A thread C started with its own agent (the owner's thread token is minted for it). */
  agentThread: string;
}
/** A's and B's relay credentials, by tenant id. */
const relayKits = new Map<string, RelayKit>();

ctx.before(async () => {
  alice = await createAccount(ctx.db, ctx.testApp);
  await loginAgain(ctx.db, ctx.testApp, alice);
  aliceMember = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: alice });
  await mintInvite(ctx.db, { kind: 'member', email: 'carol@example.test', tenantId: alice.user.tenant_id });
  bob = await createAccount(ctx.db, ctx.testApp);
  // Bob's own things, so his lists are not empty.
  await mintInvite(ctx.db, { kind: 'member', email: 'dave@example.test', tenantId: bob.user.tenant_id });
  // Agents with a credential each, so agent ids and credential names are among the probes.
  for (const [owner, handle] of [
    [alice, 'alice-echo'],
    [bob, 'bob-echo'],
  ] as const) {
    const created = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/agents',
      headers: { authorization: `Bearer ${owner.apiToken}` },
      payload: {
        name: handle,
        handle,
        template: 'echo',
        credentials: { echo_token: `probe-${randomUUID()}` },
      },
    });
    assert.equal(created.statusCode, 201, created.body);
    // An inbound webhook endpoint each (RLY-11), so endpoint ids are among the probes.
    const endpoint = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/api/v1/agents/${created.json<{ id: string }>().id}/inbound-webhooks`,
      headers: { authorization: `Bearer ${owner.apiToken}` },
      payload: { description: handle },
    });
    assert.equal(endpoint.statusCode, 201, endpoint.body);
    // Two callback endpoints each (RLY-7): their ids are among the probes, and the list pages.
    for (const path of ['/one', '/two']) {
      const callback = await ctx.testApp.app.inject({
        method: 'POST',
        url: '/api/v1/webhook-endpoints',
        headers: { authorization: `Bearer ${owner.apiToken}` },
        payload: {
          url: `https://93.184.215.14${path}`,
          event_types: ['thread.closed'],
          agent_id: created.json<{ id: string }>().id,
        },
      });
      assert.equal(callback.statusCode, 201, callback.body);
    }
    // A callback endpoint with a delivery each (RLY-7), so their ids are among the probes.
    const callback = await callbackEndpoint(ctx.db, 'https://hooks.example/cb', {
      tenantId: owner.user.tenant_id,
      agentId: created.json<{ id: string }>().id,
    });
    await callbackDeliveryRow(ctx.db, callback);
    callbackEndpoints.set(owner.user.tenant_id, callback);
  }
  // Two connections to A's published agent from a third tenant (C), one approved with its token
  // claimed, so connection ids are among A's ids and A's incoming list pages (RLY-2).
  const carol = await createAccount(ctx.db, ctx.testApp);
  await ctx.db.superuser`update agents set card_published = true where handle = 'alice-echo'`;
  const asCarol = { authorization: `Bearer ${carol.apiToken}` };
  const carolAgent = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/api/v1/agents',
    headers: asCarol,
    payload: {
      name: 'carol-echo',
      handle: 'carol-echo',
      template: 'echo',
      credentials: { echo_token: 'probe-c' },
    },
  });
  assert.equal(carolAgent.statusCode, 201, carolAgent.body);
  const connectionIds: string[] = [];
  for (const agentId of [null, carolAgent.json<{ id: string }>().id]) {
    const asked = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/connections',
      headers: asCarol,
      payload: { handle: 'alice-echo', agent_id: agentId, message: 'hello' },
    });
    assert.equal(asked.statusCode, 201, asked.body);
    connectionIds.push(asked.json<{ id: string }>().id);
  }
  const approved = await ctx.testApp.app.inject({
    method: 'POST',
    url: `/api/v1/connections/${connectionIds[0]}/approve`,
    headers: { authorization: `Bearer ${alice.apiToken}` },
  });
  assert.equal(approved.statusCode, 200, approved.body);
  const claimed = await ctx.testApp.app.inject({
    method: 'POST',
    url: `/api/v1/connections/${connectionIds[0]}/relay-token`,
    headers: asCarol,
  });
  assert.equal(claimed.statusCode, 201, claimed.body);
  // Two listed agents (A's and C's), so the directory, a list shared by every tenant, pages (RLY-1).
  await ctx.db.superuser`update agents set card_published = true where handle = 'carol-echo'`;
  for (const [owner, agentId] of [
    [alice.apiToken, await agentIdOf('alice-echo')],
    [carol.apiToken, carolAgent.json<{ id: string }>().id],
  ]) {
    const listing = await ctx.testApp.app.inject({
      method: 'POST',
      url: `/api/v1/agents/${agentId}/listing`,
      headers: { authorization: `Bearer ${owner}` },
    });
    assert.equal(listing.statusCode, 200, listing.body);
  }
  for (const handle of ['alice-echo', 'carol-echo']) {
    await decideListing(ctx.db.app, { handle, decision: 'approve', actor: 'operator:cli' });
  }
  // Two threads with A's agent over that connection, so thread and message ids are among A's ids and A's thread list pages.
  const aliceThreads: string[] = [];
  for (const text of ['first', 'second']) {
    aliceThreads.push(await startRelayThread(claimed.json<{ relay_token: string }>().relay_token, text));
  }
  // Relay credentials of A and B for the data-plane probe (RLY-3, RLY-4): each asks C's agent as a
  // person and starts a thread there (its relay token, a participant's thread); B's agent has a thread
  // from C too, as A's has (an owner's thread).
  await ctx.db.superuser`update agents set card_published = true where handle = 'bob-echo'`;
  const carolToBob = await approvedRelayToken(carol, bob, 'bob-echo');
  const bobThread = await startRelayThread(carolToBob, 'to bob');
  for (const [account, agentThread] of [
    [alice, aliceThreads[0]],
    [bob, bobThread],
  ] as const) {
    assert.ok(agentThread !== undefined);
    const relayToken = await approvedRelayToken(account, carol, 'carol-echo');
    const ownThread = await startRelayThread(relayToken, 'to carol');
    relayKits.set(account.user.tenant_id, { relayToken, ownThread, agentThread });
  }
});

/** `asker` asks for `owner`'s agent at `handle` as a person, `owner` approves, `asker` claims the relay token. */
async function approvedRelayToken(asker: TestAccount, owner: TestAccount, handle: string): Promise<string> {
  const post = (account: TestAccount, url: string, payload?: object) =>
    ctx.testApp.app.inject({
      method: 'POST',
      url,
      headers: { authorization: `Bearer ${account.apiToken}` },
      ...(payload === undefined ? {} : { payload }),
    });
  const asked = await post(asker, '/api/v1/connections', { handle, agent_id: null, message: 'hello' });
  assert.equal(asked.statusCode, 201, asked.body);
  const { id } = asked.json<{ id: string }>();
  const approved = await post(owner, `/api/v1/connections/${id}/approve`);
  assert.equal(approved.statusCode, 200, approved.body);
  const claimed = await post(asker, `/api/v1/connections/${id}/relay-token`);
  assert.equal(claimed.statusCode, 201, claimed.body);
  return claimed.json<{ relay_token: string }>().relay_token;
}

/** A new thread started with `relayToken`; its id. */
async function startRelayThread(relayToken: string, text: string): Promise<string> {
  const started = await ctx.testApp.app.inject({
    method: 'POST',
    url: '/relay/v1/threads',
    headers: { authorization: `Bearer ${relayToken}` },
    payload: { text },
  });
  assert.equal(started.statusCode, 201, started.body);
  return started.json<{ thread: { id: string } }>().thread.id;
}

async function agentIdOf(handle: string): Promise<string> {
  const [agent] = await ctx.db.superuser<{ id: string }[]>`select id from agents where handle = ${handle}`;
  assert.ok(agent !== undefined);
  return agent.id;
}

// ---------------------------------------------------------------- OpenAPI

type Schema = Record<string, unknown>;

interface Operation {
  parameters?: { name: string; in: string; required?: boolean; schema?: Schema }[];
  requestBody?: { content?: Record<string, { schema?: Schema }> };
  security?: Record<string, string[]>[];
}

interface OpenApiDocument {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
}

interface DocumentedRoute {
  method: string;
  /** Fastify form: /api/v1/tokens/:id */
  path: string;
  operation: Operation;
}

const METHODS = new Set(['get', 'post', 'put', 'patch', 'delete']);

async function readOpenApi(): Promise<OpenApiDocument> {
  const response = await ctx.testApp.app.inject({ method: 'GET', url: '/openapi.json' });
  assert.equal(response.statusCode, 200);
  return response.json<OpenApiDocument>();
}

function documentedRoutes(doc: OpenApiDocument): DocumentedRoute[] {
  const routes: DocumentedRoute[] = [];
  for (const [openApiPath, item] of Object.entries(doc.paths)) {
    const path = openApiPath.replace(/\{([^}]+)\}/g, ':$1');
    for (const [method, operation] of Object.entries(item)) {
      if (METHODS.has(method)) routes.push({ method: method.toUpperCase(), path, operation });
    }
  }
  return routes;
}

function documentedApiRoutes(doc: OpenApiDocument): DocumentedRoute[] {
  return documentedRoutes(doc).filter((route) => route.path.startsWith('/api/'));
}

/** The relay token schemes of the document (RLY-3, RLY-4): a route taking one is the relay's data plane. */
const RELAY_SCHEMES = [RELAY_TOKEN_SCHEME, THREAD_TOKEN_SCHEME] as const;
type RelayScheme = (typeof RELAY_SCHEMES)[number];

/** The relay scheme a route's security names, if any. */
function relaySchemeOf(route: DocumentedRoute): RelayScheme | undefined {
  const named = (route.operation.security ?? []).flatMap((requirement) => Object.keys(requirement));
  return RELAY_SCHEMES.find((scheme) => named.includes(scheme));
}

function pathParams(route: DocumentedRoute): string[] {
  return [...route.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((match) => match[1] as string);
}

function resolve(doc: OpenApiDocument, schema: Schema): Schema {
  const ref = schema.$ref;
  if (typeof ref !== 'string') return schema;
  const name = ref.replace('#/components/schemas/', '');
  const target = doc.components?.schemas?.[name];
  assert.ok(target !== undefined, `unresolvable $ref ${ref}`);
  return resolve(doc, target);
}

/** A small valid example of a JSON schema: required properties only, the first of any choice. */
function example(doc: OpenApiDocument, raw: Schema, depth = 0): unknown {
  assert.ok(depth < 10, 'example schema too deep');
  const schema = resolve(doc, raw);
  if ('const' in schema) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  for (const key of ['anyOf', 'oneOf', 'allOf'] as const) {
    const choices = schema[key];
    if (Array.isArray(choices) && choices.length > 0) return example(doc, choices[0] as Schema, depth + 1);
  }
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'object': {
      const properties = (schema.properties ?? {}) as Record<string, Schema>;
      const required = (schema.required ?? []) as string[];
      // minProperties beyond the required ones (a PATCH needing at least one field): take optional ones in order.
      const wanted = typeof schema.minProperties === 'number' ? schema.minProperties : 0;
      const optional = Object.keys(properties).filter((name) => !required.includes(name));
      const names = [...required, ...optional.slice(0, Math.max(0, wanted - required.length))];
      return Object.fromEntries(names.map((name) => [name, example(doc, properties[name] ?? {}, depth + 1)]));
    }
    case 'array': {
      const count = typeof schema.minItems === 'number' ? schema.minItems : 0;
      return Array.from({ length: count }, () => example(doc, (schema.items ?? {}) as Schema, depth + 1));
    }
    case 'integer':
    case 'number':
      return typeof schema.minimum === 'number' ? schema.minimum : 1;
    case 'boolean':
      return false;
    case 'null':
      return null;
    case 'string': {
      switch (schema.format) {
        case 'uuid':
          return randomUUID();
        case 'email':
          return `probe-${randomUUID().slice(0, 8)}@example.test`;
        case 'date-time':
          return new Date(Date.now() + 86400_000).toISOString();
        case 'uri':
          return 'https://example.test/';
        default: {
          const min = typeof schema.minLength === 'number' ? schema.minLength : 1;
          return 'x'.repeat(Math.max(min, 1));
        }
      }
    }
    default:
      return {};
  }
}

function exampleBody(doc: OpenApiDocument, route: DocumentedRoute): unknown {
  const schema = route.operation.requestBody?.content?.['application/json']?.schema;
  return schema === undefined ? undefined : example(doc, schema);
}

function exampleQuery(doc: OpenApiDocument, route: DocumentedRoute): Record<string, string> {
  const query: Record<string, string> = {};
  for (const parameter of route.operation.parameters ?? []) {
    if (parameter.in === 'query' && parameter.required === true) {
      query[parameter.name] = String(example(doc, parameter.schema ?? {}));
    }
  }
  return query;
}

// ---------------------------------------------------------------- tenant A, as the superuser sees it

async function tenantTables(): Promise<string[]> {
  // Every ordinary table of the app's schema with a tenant_id column (pg_catalog: no privilege filtering).
  const rows = await ctx.db.superuser<{ table_name: string }[]>`
    select c.relname as table_name from pg_attribute a
    join pg_class c on c.oid = a.attrelid
    join pg_namespace n on n.oid = c.relnamespace
    where a.attname = 'tenant_id' and not a.attisdropped and c.relkind in ('r', 'p')
      and n.nspname = current_schema()
    order by 1`;
  return rows.map((row) => row.table_name);
}

/** A digest of every row of `tenant` (A, unless named) in every tenant table, and of its tenants row. */
async function digestOfTenant(tenant = alice.user.tenant_id): Promise<Record<string, string>> {
  const digest: Record<string, string> = {};
  for (const table of [...(await tenantTables()), 'tenants']) {
    const column = table === 'tenants' ? 'id' : 'tenant_id';
    const [row] = await ctx.db.superuser<{ digest: string; count: string }[]>`
      select md5(coalesce(string_agg(row_to_json(t)::text, '' order by row_to_json(t)::text), '')) as digest,
             count(*)::text as count
      from ${ctx.db.superuser(table)} t where ${ctx.db.superuser(column)} = ${tenant}::uuid`;
    digest[table] = `${row?.count}:${row?.digest}`;
  }
  return digest;
}

/** Every uuid in any row of `tenant` (A, unless named: ids, and what they reference), and its audit hashes, usernames and emails. */
async function identifiersOfTenant(
  tenant = alice.user.tenant_id,
): Promise<{ uuids: string[]; all: string[] }> {
  const uuids = new Set<string>([tenant]);
  const others = new Set<string>();
  for (const table of await tenantTables()) {
    const columns = await ctx.db.superuser<{ column_name: string; data_type: string }[]>`
      select column_name, data_type from information_schema.columns
      where table_schema = current_schema() and table_name = ${table}`;
    const rows = await ctx.db.superuser<Record<string, unknown>[]>`
      select * from ${ctx.db.superuser(table)} where tenant_id = ${tenant}::uuid`;
    for (const row of rows) {
      for (const { column_name: name, data_type: type } of columns) {
        const value = row[name];
        if (value === null || value === undefined) continue;
        if (type === 'uuid') uuids.add(String(value));
        if (name === 'hash' && table === 'audit_events') {
          others.add(Buffer.isBuffer(value) ? value.toString('hex') : String(value));
        }
        if (table === 'users' && (name === 'username' || name === 'email')) others.add(String(value));
      }
    }
  }
  return { uuids: [...uuids], all: [...uuids, ...others] };
}

// ---------------------------------------------------------------- tenant B's requests

interface Credential {
  name: string;
  headers: () => Record<string, string>;
}

let bobCookie: string;
const credentials: Credential[] = [
  { name: "B's API token", headers: () => ({ authorization: `Bearer ${bob.apiToken}` }) },
  {
    name: "B's session cookie",
    headers: () => ({ cookie: bobCookie, origin: new URL(ctx.testApp.config.publicUrl).origin }),
  },
];

/**
 * The route's path with `id` in every uuid parameter and a valid example in
 * any other (a credential name, a template id), so the id is what decides the answer.
 */
function fill(doc: OpenApiDocument, route: DocumentedRoute, id: string): string {
  let url = route.path;
  for (const param of pathParams(route)) {
    const schema = route.operation.parameters?.find((p) => p.in === 'path' && p.name === param)?.schema ?? {};
    const value = resolve(doc, schema).format === 'uuid' ? id : String(example(doc, schema));
    url = url.replace(`:${param}`, encodeURIComponent(value));
  }
  return url;
}

async function call(
  doc: OpenApiDocument,
  credential: Credential,
  route: DocumentedRoute,
  url: string,
): Promise<LightMyRequestResponse> {
  const body = exampleBody(doc, route);
  const send = () =>
    ctx.testApp.app.inject({
      method: route.method as 'GET',
      url,
      query: exampleQuery(doc, route),
      headers: credential.headers(),
      ...(body === undefined ? {} : { payload: body as object }),
    });
  const response = await send();
  if (response.statusCode !== 429) return response;
  // Hundreds of probes run past a rate-limited route's bucket (RLY-5's thread-token mints): the limiter
  // is not what this suite probes, so it is emptied and the probe asked again.
  await ctx.db.superuser`delete from enclave.rate_limits`;
  return send();
}

function problemOf(response: LightMyRequestResponse): { status: number; code: string | undefined } {
  let code: string | undefined;
  try {
    code = response.json<{ code?: string }>().code;
  } catch {
    code = undefined;
  }
  return { status: response.statusCode, code };
}

function leaks(response: LightMyRequestResponse, identifiers: readonly string[]): string[] {
  const text = `${response.body}\n${JSON.stringify(response.headers)}`.toLowerCase();
  return identifiers.filter((id) => text.includes(id.toLowerCase()));
}

describe('cross-tenant suite, generated from /openapi.json', () => {
  test('TEN-7: every /api route the app serves is in the OpenAPI document (a hidden or undocumented /api route fails)', async () => {
    const doc = await readOpenApi();
    const documented = new Set(documentedApiRoutes(doc).map((route) => `${route.method} ${route.path}`));
    const served = registeredRoutes(ctx.testApp.app);
    assert.ok(
      served.some((route) => route.path === '/api/v1/tokens/:id'),
      `the route listing was read (got ${served.length} routes)`,
    );
    const missing = served
      .filter((route) => route.path.startsWith('/api/'))
      // HEAD is served for every GET; it is documented through its GET.
      .filter((route) => !(route.method === 'HEAD' && documented.has(`GET ${route.path}`)))
      .map((route) => `${route.method} ${route.path}`)
      .filter((key) => !documented.has(key));
    assert.deepEqual(missing, [], 'served under /api but missing from /openapi.json');
  });

  test("TEN-7: as tenant B (API token and session cookie), every route with a path id answers A's real ids exactly like random ids (404), lists show none of A's ids, and A's rows are unchanged", async () => {
    const doc = await readOpenApi();
    const routes = documentedApiRoutes(doc);
    const withParams = routes.filter((route) => pathParams(route).length > 0);
    const lists = routes.filter((route) => route.method === 'GET' && pathParams(route).length === 0);
    const others = routes.filter((route) => route.method !== 'GET' && pathParams(route).length === 0);
    // Not vacuous: today's routes are here (the suite itself names none of them).
    assert.ok(withParams.length >= 3, 'routes with path ids were found');
    assert.ok(lists.length >= 5, 'list routes were found');

    const { uuids, all } = await identifiersOfTenant();
    for (const id of [alice.user.id, alice.apiTokenId, alice.sessionId, aliceMember.user.id]) {
      assert.ok(uuids.includes(id), `A's ids were collected (${id})`);
    }
    const before = await digestOfTenant();
    const failures: string[] = [];
    let probes = 0;

    for (const credential of credentials) {
      // A fresh browser session for each round: a sign-out-everywhere probe ends the previous one.
      bobCookie = (await loginAgain(ctx.db, ctx.testApp, bob)).sessionCookie;
      const me = await ctx.testApp.app.inject({
        method: 'GET',
        url: '/api/v1/me',
        headers: credential.headers(),
      });
      assert.equal(me.statusCode, 200, `${credential.name} is signed in`);

      for (const route of withParams) {
        const random = await call(doc, credential, route, fill(doc, route, randomUUID()));
        const expected = problemOf(random);
        if (expected.status !== 404) {
          failures.push(
            `${credential.name} ${route.method} ${route.path} with a random id: ${expected.status}`,
          );
        }
        for (const id of uuids) {
          const foreign = await call(doc, credential, route, fill(doc, route, id));
          probes += 1;
          const got = problemOf(foreign);
          if (got.status !== 404 || got.code !== expected.code) {
            failures.push(
              `${credential.name} ${route.method} ${route.path} with A's ${id}: ${got.status} ${got.code}, random id gave ${expected.status} ${expected.code}`,
            );
          }
          const strip = (body: string) => body.replace(/"request_id":"[^"]+"/, '');
          if (strip(foreign.body) !== strip(random.body)) {
            failures.push(
              `${credential.name} ${route.method} ${route.path} with A's ${id}: body differs from a random id's`,
            );
          }
          for (const leak of leaks(foreign, all)) {
            failures.push(`${credential.name} ${route.method} ${route.path} answered with A's ${leak}`);
          }
        }
      }

      for (const route of [...lists, ...others]) {
        const response = await call(doc, credential, route, route.path);
        probes += 1;
        if (route.method === 'GET' && response.statusCode !== 200) {
          failures.push(
            `${credential.name} GET ${route.path}: ${response.statusCode} (a list should answer B)`,
          );
        }
        for (const leak of leaks(response, all)) {
          failures.push(`${credential.name} ${route.method} ${route.path} answered with A's ${leak}`);
        }
      }
    }

    assert.deepEqual(failures, [], 'cross-tenant leaks');
    assert.ok(probes >= withParams.length * uuids.length * credentials.length);
    assert.deepEqual(await digestOfTenant(), before, "A's rows are unchanged");

    // Only now A's own credentials: A sees its own ids, so the checks above were not vacuous.
    const own = await ctx.testApp.app.inject({
      method: 'GET',
      url: '/api/v1/tokens',
      headers: { authorization: `Bearer ${alice.apiToken}` },
    });
    assert.ok(own.body.includes(alice.apiTokenId), "A's own list shows A's token");
  });

  test("TEN-7, RLY-2: /a2a/:handle answers tenant B's credentials, with any of A's ids as the task, exactly as an unknown handle, and A's rows are unchanged", async () => {
    const { uuids, all } = await identifiersOfTenant();
    const before = await digestOfTenant();
    const a2a = (handle: string, credential: Credential, method: string, params: object) =>
      ctx.testApp.app.inject({
        method: 'POST',
        url: `/a2a/${handle}`,
        headers: { ...credential.headers(), 'content-type': 'application/json', 'a2a-version': '1.0' },
        payload: { jsonrpc: '2.0', id: 1, method, params },
      });
    const send = (taskId: string) => ({
      message: { messageId: randomUUID(), role: 'ROLE_USER', parts: [{ text: 'probe' }], taskId },
    });
    const failures: string[] = [];
    for (const credential of credentials) {
      bobCookie = (await loginAgain(ctx.db, ctx.testApp, bob)).sessionCookie;
      const unknown = await a2a(`nobody-${randomUUID().slice(0, 8)}`, credential, 'SendMessage', send(''));
      assert.equal(unknown.json<{ error: { code: number } }>().error.code, -32001, unknown.body);
      const probes = [a2a('alice-echo', credential, 'SendMessage', send(''))];
      for (const id of uuids) {
        probes.push(a2a('alice-echo', credential, 'SendMessage', send(id)));
        probes.push(a2a('alice-echo', credential, 'GetTask', { id }));
        probes.push(a2a('alice-echo', credential, 'CancelTask', { id }));
      }
      for (const answer of await Promise.all(probes)) {
        if (answer.statusCode !== unknown.statusCode || answer.body !== unknown.body) {
          failures.push(`${credential.name}: ${answer.statusCode} ${answer.body}`);
        }
        for (const leak of leaks(answer, all)) failures.push(`${credential.name} answered with A's ${leak}`);
      }
    }
    assert.deepEqual(failures, [], 'cross-tenant answers at /a2a');
    assert.deepEqual(await digestOfTenant(), before, "A's rows are unchanged");
  });

  test("TEN-7, RLY-3, RLY-4: every /relay data-plane route in /openapi.json answers tenant B's relay and thread tokens with A's ids exactly as with random ids (never 2xx, never 500), and A's tokens with B's ids likewise; neither tenant's rows change", async () => {
    const doc = await readOpenApi();
    // The data plane is every documented route that takes a relay or thread token, wherever it lives.
    const routes = documentedRoutes(doc).filter((route) => relaySchemeOf(route) !== undefined);
    const withParams = routes.filter((route) => pathParams(route).length > 0);
    const others = routes.filter((route) => pathParams(route).length === 0);
    // Not vacuous: today's relay routes are here (the suite names none of them).
    assert.ok(
      routes.some((route) => !route.path.startsWith('/api/')),
      'routes outside /api were found',
    );
    assert.ok(withParams.length >= 3, 'relay routes with path ids were found');
    for (const scheme of RELAY_SCHEMES) {
      assert.ok(
        withParams.some((route) => relaySchemeOf(route) === scheme),
        `a route with path ids takes ${scheme}`,
      );
    }
    const failures: string[] = [];
    const strip = (body: string) => body.replace(/"request_id":"[^"]+"/, '');
    for (const [prober, victim] of [
      [bob, alice],
      [alice, bob],
    ] as const) {
      const kit = relayKits.get(prober.user.tenant_id);
      assert.ok(kit !== undefined);
      const who = prober === bob ? 'B' : 'A';
      const threadToken = async (threadId: string) => {
        // The probes above spent the mint buckets (RLY-5); the limiter is not what this test probes.
        await ctx.db.superuser`delete from enclave.rate_limits`;
        const minted = await ctx.testApp.app.inject({
          method: 'POST',
          url: `/api/v1/threads/${threadId}/access-token`,
          headers: { authorization: `Bearer ${prober.apiToken}` },
        });
        assert.equal(minted.statusCode, 201, minted.body);
        return minted.json<{ thread_token: string }>().thread_token;
      };
      const bearer = (name: string, token: string): Credential => ({
        name: `${who}'s ${name}`,
        headers: () => ({ authorization: `Bearer ${token}` }),
      });
      const tokens: Record<RelayScheme, Credential[]> = {
        [RELAY_TOKEN_SCHEME]: [bearer('relay token', kit.relayToken)],
        [THREAD_TOKEN_SCHEME]: [
          bearer("participant's thread token", await threadToken(kit.ownThread)),
          bearer("owner's thread token", await threadToken(kit.agentThread)),
        ],
      };
      const { uuids, all } = await identifiersOfTenant(victim.user.tenant_id);
      assert.ok(
        uuids.includes(relayKits.get(victim.user.tenant_id)?.agentThread ?? ''),
        "the victim's relay threads are among its ids",
      );
      const before = await digestOfTenant(victim.user.tenant_id);

      for (const route of withParams) {
        for (const credential of tokens[relaySchemeOf(route) ?? RELAY_TOKEN_SCHEME]) {
          const label = `${credential.name} ${route.method} ${route.path}`;
          const random = await call(doc, credential, route, fill(doc, route, randomUUID()));
          const expected = problemOf(random);
          if (expected.status < 400 || expected.status >= 500) {
            failures.push(`${label} with a random id: ${expected.status}`);
          }
          for (const id of uuids) {
            const foreign = await call(doc, credential, route, fill(doc, route, id));
            const got = problemOf(foreign);
            if (got.status !== expected.status || got.code !== expected.code) {
              failures.push(
                `${label} with the other tenant's ${id}: ${got.status} ${got.code}, random id gave ${expected.status} ${expected.code}`,
              );
            } else if (strip(foreign.body) !== strip(random.body)) {
              failures.push(`${label} with the other tenant's ${id}: body differs from a random id's`);
            }
            for (const leak of leaks(foreign, all)) failures.push(`${label} answered with ${leak}`);
          }
        }
      }
      // A thread start names no id: its token's own grant decides where it goes (C's agent), never the victim.
      for (const route of others) {
        for (const credential of tokens[relaySchemeOf(route) ?? RELAY_TOKEN_SCHEME]) {
          const response = await call(doc, credential, route, route.path);
          if (response.statusCode >= 500) {
            failures.push(`${credential.name} ${route.method} ${route.path}: ${response.statusCode}`);
          }
          for (const leak of leaks(response, all)) {
            failures.push(`${credential.name} ${route.method} ${route.path} answered with ${leak}`);
          }
        }
      }
      assert.deepEqual(
        await digestOfTenant(victim.user.tenant_id),
        before,
        `the rows of ${who === 'B' ? 'A' : 'B'} are unchanged`,
      );
    }
    assert.deepEqual(failures, [], 'cross-tenant answers at the relay data plane');
  });

  test("TEN-7: every paged list in /openapi.json (a GET taking a string `after`) refuses a cursor of tenant A's same list from tenant B with 400 cursor_invalid, and shows nothing of A's", async () => {
    const doc = await readOpenApi();
    const paged = documentedApiRoutes(doc).filter(
      (route) =>
        route.method === 'GET' &&
        (route.operation.parameters ?? []).some(
          (p) => p.in === 'query' && p.name === 'after' && resolve(doc, p.schema ?? {}).type === 'string',
        ),
    );
    assert.ok(paged.length >= 6, `paged lists were found (${paged.map((route) => route.path).join(', ')})`);
    // Two rows in each of A's lists, so that A's first page of one row ends in a cursor.
    const agentOf = async (account: TestAccount) => {
      const listed = await ctx.testApp.app.inject({
        method: 'GET',
        url: '/api/v1/agents',
        headers: { authorization: `Bearer ${account.apiToken}` },
      });
      const [agent] = listed.json<{ agents: { id: string }[] }>().agents;
      assert.ok(agent !== undefined);
      return agent.id;
    };
    const [aliceAgent, bobAgent] = [await agentOf(alice), await agentOf(bob)];
    await insertAgent(ctx.db.app, alice.user.tenant_id, 'alice-more');
    const minted = await ctx.testApp.app.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      headers: { authorization: `Bearer ${alice.apiToken}` },
      payload: { name: 'second' },
    });
    assert.equal(minted.statusCode, 201);
    const tenantId = alice.user.tenant_id;
    const record = { host: 'a.example.test', port: 443, method: 'CONNECT' as const, allowed: true };
    const sizes = { bytesOut: 1, bytesIn: 1, durationMs: 1, reason: undefined, startedAt: new Date() };
    await withTenant(ctx.db.app, tenantId, (tx) =>
      insertEgressRecords(tx, { tenantId, agentId: aliceAgent }, [
        { ...record, ...sizes },
        { ...record, ...sizes },
      ]),
    );
    const aliceCallbacks = callbackEndpoints.get(tenantId);
    assert.ok(aliceCallbacks !== undefined);
    await callbackDeliveryRow(ctx.db, aliceCallbacks);
    // A list whose path id is not an agent's: the id of each tenant's own endpoint.
    const pathIds: Record<string, Map<string, string>> = {
      '/api/v1/webhook-endpoints/:id/deliveries': new Map(
        [aliceAgent, bobAgent].map((agent, i) => [
          agent,
          callbackEndpoints.get([alice, bob][i]?.user.tenant_id ?? '')?.id ?? '',
        ]),
      ),
    };
    const { all } = await identifiersOfTenant();
    const failures: string[] = [];
    bobCookie = (await loginAgain(ctx.db, ctx.testApp, bob)).sessionCookie;
    for (const route of paged) {
      const urlOf = (agentId: string) => fill(doc, route, pathIds[route.path]?.get(agentId) ?? agentId);
      const own = await ctx.testApp.app.inject({
        method: 'GET',
        url: `${urlOf(aliceAgent)}?limit=1`,
        headers: { authorization: `Bearer ${alice.apiToken}` },
      });
      const cursor = own.json<{ next_after?: string | null }>().next_after;
      if (typeof cursor !== 'string') {
        failures.push(`A's ${route.path} gave no cursor to probe with (${own.statusCode})`);
        continue;
      }
      for (const credential of credentials) {
        const foreign = await ctx.testApp.app.inject({
          method: 'GET',
          url: `${urlOf(bobAgent)}?after=${encodeURIComponent(cursor)}`,
          headers: credential.headers(),
        });
        const got = problemOf(foreign);
        if (got.status !== 400 || got.code !== 'cursor_invalid') {
          failures.push(`${credential.name} GET ${route.path} with A's cursor: ${got.status} ${got.code}`);
        }
        for (const leak of leaks(foreign, all)) {
          failures.push(`${credential.name} GET ${route.path} with A's cursor answered with A's ${leak}`);
        }
      }
    }
    assert.deepEqual(failures, [], 'foreign cursors');
  });
});
