import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import * as jose from 'jose';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { type ProblemBody, useTestApp } from '../../test/helpers/app.ts';
import type { SignedAgentCard } from './cards.ts';

// RLY-1, RLY-13 through HTTP: an owner publishes an agent's card (off by
// default) from the API or the agent page; anyone reads the published card
// at both paths, signed with the operator key whose public half is the JWK
// Set; an unknown handle and an unpublished agent answer the same 404; the
// card never names the tenant, the owner, an email or the instance address.

const ctx = useTestApp();
let owner: TestAccount;
let member: TestAccount;
let serial = 0;

ctx.before(async () => {
  owner = await createAccount(ctx.db, ctx.testApp, { email: `card-owner-${process.pid}@example.test` });
  member = await createAccount(ctx.db, ctx.testApp, { kind: 'member', tenantOf: owner });
});

function api(account: TestAccount, method: 'GET' | 'POST' | 'PUT', url: string, payload?: object) {
  return ctx.testApp.app.inject({
    method,
    url,
    headers: { authorization: `Bearer ${account.apiToken}` },
    ...(payload === undefined ? {} : { payload }),
  });
}

const anonymous = (url: string) => ctx.testApp.app.inject({ method: 'GET', url });

async function newAgent(creator = owner, description = 'Says back what it is told.') {
  serial += 1;
  const handle = `card-${process.pid}-${serial}`;
  const response = await api(creator, 'POST', '/api/v1/agents', {
    name: `Echo ${serial}`,
    handle,
    description,
    template: 'echo',
  });
  assert.equal(response.statusCode, 201, response.body);
  return { id: response.json<{ id: string }>().id, handle };
}

const publish = (id: string, published: boolean, account = owner) =>
  api(account, 'PUT', `/api/v1/agents/${id}/card`, { published });

async function auditActions(target: string): Promise<string[]> {
  const rows = await ctx.db.superuser<{ action: string }[]>`
    select action from audit_events where target = ${target} and action like 'agent.card_%' order by seq`;
  return rows.map((row) => row.action);
}

/** Verifies the card's first signature with jose, as any JOSE library would: detached payload, key from the JWKS. */
async function verifyWithJose(
  card: Record<string, unknown>,
  jwksBody: unknown,
): Promise<jose.JWSHeaderParameters> {
  const { signatures, ...unsigned } = card as { signatures: { protected: string; signature: string }[] };
  const [signature] = signatures;
  assert.ok(signature !== undefined, 'the card carries a signature');
  const { default: canonicalize } = await import('canonicalize');
  const payload = jose.base64url.encode(canonicalize(unsigned) ?? '');
  const keys = jose.createLocalJWKSet(jwksBody as jose.JSONWebKeySet);
  const verified = await jose.flattenedVerify({ ...signature, payload }, keys, { algorithms: ['EdDSA'] });
  assert.ok(verified.protectedHeader !== undefined);
  return verified.protectedHeader;
}

const without = (problem: ProblemBody) => {
  const { request_id: _id, ...rest } = problem;
  return rest;
};

describe('agent cards', () => {
  test('RLY-1: a card is not published until its owner publishes it; then anyone reads it at both paths', async () => {
    const { id, handle } = await newAgent();
    const before = await api(owner, 'GET', `/api/v1/agents/${id}`);
    assert.equal(before.json<{ card_published: boolean }>().card_published, false);
    assert.equal((await anonymous(`/agents/${handle}/card.json`)).statusCode, 404);

    const published = await publish(id, true);
    assert.equal(published.statusCode, 200, published.body);
    const card = published.json<SignedAgentCard>();
    assert.equal(card.name, `Echo ${serial}`);

    for (const url of [`/agents/${handle}/card.json`, `/a2a/${handle}/.well-known/agent-card.json`]) {
      const response = await anonymous(url);
      assert.equal(response.statusCode, 200, url);
      assert.match(String(response.headers['content-type']), /^application\/json/);
      assert.equal(response.headers['cache-control'], 'no-cache');
      const served = response.json<SignedAgentCard>();
      assert.deepEqual({ ...served, signatures: [] }, { ...card, signatures: [] });
    }
    assert.equal(
      (await api(owner, 'GET', `/api/v1/agents/${id}`)).json<{ card_published: boolean }>().card_published,
      true,
    );
  });

  test('RLY-1: the card is an A2A 1.0 AgentCard: relay endpoint over JSON-RPC, a bearer relay-token scheme it requires, one skill from the template', async () => {
    const { id, handle } = await newAgent();
    const card = (await publish(id, true)).json<SignedAgentCard>();
    const { publicUrl } = ctx.testApp.config;
    assert.deepEqual(card.supportedInterfaces, [
      { url: `${publicUrl}/a2a/${handle}`, protocolBinding: 'JSONRPC', protocolVersion: '1.0' },
    ]);
    assert.equal(card.description, 'Says back what it is told.');
    assert.deepEqual(card.securitySchemes.relay_token.httpAuthSecurityScheme.scheme, 'Bearer');
    assert.match(card.securitySchemes.relay_token.httpAuthSecurityScheme.bearerFormat, /^enc_relay_/);
    assert.deepEqual(card.securityRequirements, [{ schemes: { relay_token: { list: ['relay'] } } }]);
    assert.deepEqual(card.defaultInputModes, ['text/plain']);
    assert.deepEqual(card.defaultOutputModes, ['text/plain']);
    const template = ctx.testApp.templates.get('echo');
    assert.ok(template !== undefined);
    assert.deepEqual(card.skills, [
      { id: 'echo', name: template.name, description: template.description, tags: ['echo'] },
    ]);
    // The SDK's own reader keeps every member of the card (nothing is outside the A2A schema).
    const { AgentCard } = await import('@a2a-js/sdk');
    const read = AgentCard.fromJSON(card);
    assert.equal(read.supportedInterfaces[0]?.url, `${publicUrl}/a2a/${handle}`);
    assert.equal(read.securitySchemes.relay_token?.scheme?.$case, 'httpAuthSecurityScheme');
    assert.equal(read.signatures.length, 1);
  });

  test('RLY-1: the card never shows the tenant, the owner, their email or the instance subdomain', async () => {
    const { id, handle } = await newAgent();
    const subdomain = `ec${String(process.pid).padStart(8, '0').slice(-8)}`;
    await ctx.db.superuser`
      insert into agent_instances (agent_id, tenant_id, subdomain)
      values (${id}::uuid, ${owner.user.tenant_id}::uuid, ${subdomain})`;
    await publish(id, true);
    const [tenant] = await ctx.db.superuser<{ name: string; slug: string | null }[]>`
      select * from tenants where id = ${owner.user.tenant_id}::uuid`;
    const body = (await anonymous(`/agents/${handle}/card.json`)).body;
    const secrets = [
      owner.user.tenant_id,
      owner.user.id,
      owner.user.username,
      `card-owner-${process.pid}@example.test`,
      subdomain,
      id,
      ...Object.values(tenant ?? {}).filter(
        (value): value is string => typeof value === 'string' && value.length > 3,
      ),
    ];
    for (const secret of secrets) assert.ok(!body.includes(secret), `the card shows ${secret}`);
  });

  test('RLY-1: an unknown handle and an unpublished agent get the same 404 problem, byte for byte but the request id', async () => {
    const { id, handle } = await newAgent();
    await publish(id, true);
    assert.equal((await publish(id, false)).json<{ published: boolean }>().published, false);
    for (const path of ['/agents/%s/card.json', '/a2a/%s/.well-known/agent-card.json']) {
      const unpublished = await anonymous(path.replace('%s', handle));
      const unknown = await anonymous(path.replace('%s', `no-such-${process.pid}`));
      assert.equal(unpublished.statusCode, 404);
      assert.equal(unknown.statusCode, 404);
      assert.equal(unpublished.headers['content-type'], unknown.headers['content-type']);
      const [a, b] = [unpublished.json<ProblemBody>(), unknown.json<ProblemBody>()];
      assert.equal(a.code, 'not_found');
      assert.equal(
        unpublished.body.replace(a.request_id, ''),
        unknown.body.replace(b.request_id, ''),
        'identical bodies',
      );
      assert.deepEqual(without(a), without(b));
    }
  });

  test('RLY-1: publishing and unpublishing are audit events; asking for the state it has records nothing', async () => {
    const { id } = await newAgent();
    assert.equal((await publish(id, true)).statusCode, 200);
    assert.equal((await publish(id, true)).statusCode, 200);
    assert.equal((await publish(id, false)).statusCode, 200);
    assert.equal((await publish(id, false)).statusCode, 200);
    assert.deepEqual(await auditActions(`agent:${id}`), ['agent.card_published', 'agent.card_unpublished']);
  });

  test("RLY-1: a member cannot publish a colleague's agent; another tenant's agent is a 404; bad bodies are 400 naming the field", async () => {
    const { id, handle } = await newAgent();
    const refused = await publish(id, true, member);
    assert.equal(refused.statusCode, 403);
    assert.equal(refused.json<ProblemBody>().code, 'forbidden');
    const stranger = await createAccount(ctx.db, ctx.testApp);
    assert.equal((await publish(id, true, stranger)).statusCode, 404);
    assert.equal((await anonymous(`/agents/${handle}/card.json`)).statusCode, 404);
    for (const body of [{}, { published: 'yes' }, { published: true, extra: 1 }]) {
      const response = await api(owner, 'PUT', `/api/v1/agents/${id}/card`, body);
      assert.equal(response.statusCode, 400, JSON.stringify(body));
      assert.ok(
        response
          .json<ProblemBody>()
          .errors?.some((error) => /^(body\/)?(published|extra)$/.test(error.field)),
        response.body,
      );
    }
    assert.equal(
      (await api(owner, 'PUT', '/api/v1/agents/not-a-uuid/card', { published: true })).statusCode,
      400,
    );
    assert.deepEqual(await auditActions(`agent:${id}`), []);
  });

  test('RLY-1: the agent page publishes and unpublishes with a plain form (post/redirect/get)', async () => {
    const { id, handle } = await newAgent();
    const headers = {
      cookie: owner.sessionCookie,
      origin: new URL(ctx.testApp.config.publicUrl).origin,
      'content-type': 'application/x-www-form-urlencoded',
    };
    const page = await ctx.testApp.app.inject({ method: 'GET', url: `/dashboard/agents/${id}`, headers });
    assert.match(page.body, /Not published\./);
    assert.match(page.body, /name="published" value="true"/);
    const post = (payload: string) =>
      ctx.testApp.app.inject({ method: 'POST', url: `/dashboard/agents/${id}/card`, headers, payload });
    const on = await post('published=true');
    assert.equal(on.statusCode, 303);
    assert.equal(on.headers.location, `/dashboard/agents/${id}?notice=card-published#card`);
    const after = await ctx.testApp.app.inject({ method: 'GET', url: on.headers.location, headers });
    assert.match(after.body, /card is published/);
    assert.ok(after.body.includes(`/agents/${handle}/card.json`));
    assert.equal((await anonymous(`/agents/${handle}/card.json`)).statusCode, 200);

    const bad = await post('published=maybe');
    assert.equal(bad.statusCode, 400);
    assert.match(bad.body, /Choose to publish or to unpublish the card\./);

    const off = await post('published=false');
    assert.equal(off.statusCode, 303);
    assert.equal((await anonymous(`/agents/${handle}/card.json`)).statusCode, 404);
  });

  test('RLY-13: a served card verifies with jose against /.well-known/jwks.json; one changed byte fails', async () => {
    const { id, handle } = await newAgent();
    await publish(id, true);
    const jwksResponse = await anonymous('/.well-known/jwks.json');
    assert.equal(jwksResponse.statusCode, 200);
    const jwks = jwksResponse.json<{ keys: (jose.JWK & { kid: string })[] }>();
    assert.equal(jwks.keys.length, 1);
    const [key] = jwks.keys;
    assert.ok(key !== undefined);
    assert.equal(key.kty, 'OKP');
    assert.equal(key.crv, 'Ed25519');
    // kid is the RFC 7638 thumbprint, as jose computes it.
    assert.equal(key.kid, await jose.calculateJwkThumbprint({ kty: key.kty, crv: key.crv, x: key.x ?? '' }));

    const body = (await anonymous(`/a2a/${handle}/.well-known/agent-card.json`)).body;
    const header = await verifyWithJose(JSON.parse(body), jwks);
    assert.equal(header.alg, 'EdDSA');
    assert.equal(header.kid, key.kid);
    assert.equal(header.jku, `${ctx.testApp.config.publicUrl}/.well-known/jwks.json`);

    // One byte of the name changed: the card still parses, and no longer verifies.
    const at = body.indexOf('"name":"') + '"name":"'.length;
    const tampered = `${body.slice(0, at)}${body[at] === 'X' ? 'Y' : 'X'}${body.slice(at + 1)}`;
    assert.notEqual(tampered, body);
    await assert.rejects(
      verifyWithJose(JSON.parse(tampered), jwks),
      jose.errors.JWSSignatureVerificationFailed,
    );
  });

  test('RLY-13: the A2A SDK’s own verifier accepts a served card with the key from the JWKS, and refuses a changed one', async () => {
    const { id, handle } = await newAgent();
    await publish(id, true);
    const jwks = (await anonymous('/.well-known/jwks.json')).json<{ keys: (jose.JWK & { kid: string })[] }>();
    const { verifyAgentCardSignature } = await import('@a2a-js/sdk');
    const verify = verifyAgentCardSignature(async (kid) => {
      const key = jwks.keys.find((candidate) => candidate.kid === kid);
      assert.ok(key !== undefined, `no key ${kid}`);
      return key;
    });
    const card = JSON.parse((await anonymous(`/agents/${handle}/card.json`)).body);
    await verify(card);
    await assert.rejects(verify({ ...card, description: `${card.description}!` }));
  });

  test('RLY-13: a card verifies only with the operator key: another key set refuses it', async () => {
    const { id, handle } = await newAgent();
    await publish(id, true);
    const card = (await anonymous(`/agents/${handle}/card.json`)).json<Record<string, unknown>>();
    const { publicKey } = await jose.generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const other = { ...(await jose.exportJWK(publicKey)), kid: 'other', alg: 'EdDSA' };
    await assert.rejects(verifyWithJose(card, { keys: [other] }), jose.errors.JWKSNoMatchingKey);
    const own = (await anonymous('/.well-known/jwks.json')).json<{ keys: jose.JWK[] }>();
    await assert.rejects(
      verifyWithJose(card, { keys: [{ ...other, kid: own.keys[0]?.kid ?? '' }] }),
      jose.errors.JWSSignatureVerificationFailed,
    );
  });
});
