import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, test } from 'node:test';
import type { Sql } from 'postgres';
import { createAccount, type TestAccount } from '../../test/helpers/accounts.ts';
import { insertAgent } from '../../test/helpers/agents.ts';
import { buildTestApp, useTestApp } from '../../test/helpers/app.ts';
import { callbackDeliveryRow, callbackEndpoint } from '../../test/helpers/callbacks.ts';
import { connect } from '../db/target.ts';
import { withTenant } from '../db/tenant.ts';
import type { App } from '../http/app.ts';
import { callbacksStatus, type StatusReport } from './components.ts';
import { readCallbackFigures } from './platform-reads.ts';

// RLY-10: /status.json and /status are public, carry platform-wide figures and
// no tenant's data, and answer within seconds when the database is frozen.

/** A safety net far above the bound, not a timing assertion: a hang fails here, not at the harness timeout. */
const HANG_MS = 15_000;

const ctx = useTestApp();
const marker = `zq${randomBytes(4).toString('hex')}`;
let tenant: TestAccount;
let agentId: string;

ctx.before(async () => {
  // Before any request, so the app's first (cached) report already sees them.
  tenant = await createAccount(ctx.db, ctx.testApp, {
    username: `${marker}_owner`,
    email: `${marker}@distinct.example`,
  });
  const tenantId = tenant.user.tenant_id;
  agentId = await insertAgent(ctx.db.app, tenantId, marker);
  await withTenant(
    ctx.db.app,
    tenantId,
    (tx) => tx`
    insert into agent_instances (agent_id, tenant_id, subdomain, state, desired_state)
    values (${agentId}::uuid, ${tenantId}::uuid, ${`${marker.slice(0, 2)}${randomBytes(4).toString('hex')}`},
            'running', 'running')`,
  );
  await ctx.db
    .app`insert into worker_heartbeats (worker_id, started_at, seen_at) values ('status-routes', now(), now())`;
});

describe('/status.json and /status', () => {
  test('RLY-10: on a healthy database every component is there with its status, checked_at and figures; overall operational', async () => {
    const response = await ctx.testApp.app.inject({ method: 'GET', url: '/status.json' });
    assert.equal(response.statusCode, 200);
    const report = response.json() as StatusReport;
    const c = report.components;
    assert.deepEqual(Object.keys(c).sort(), [
      'agent_instances',
      'audit_checkpoints',
      'callbacks',
      'database',
      'job_workers',
      'queue',
    ]);
    for (const component of Object.values(c)) assert.ok(!Number.isNaN(Date.parse(component.checked_at)));
    assert.equal(c.database.status, 'operational');
    assert.equal(c.job_workers.status, 'operational');
    assert.equal(c.job_workers.workers_seen, 1);
    assert.equal(c.queue.status, 'operational');
    assert.equal(typeof c.queue.depth, 'number');
    assert.equal(c.agent_instances.running, 1);
    // No callback delivery has finished yet: no data, which does not lower the overall status.
    assert.deepEqual(
      { status: c.callbacks.status, hour: c.callbacks.success_rate_hour, day: c.callbacks.success_rate_day },
      { status: 'no_data', hour: null, day: null },
    );
    assert.equal(report.status, 'operational');
  });

  test('RLY-10: the page shows the same report without a script, needs no sign-in, and the sign-in page links to it', async () => {
    const json = (
      await ctx.testApp.app.inject({ method: 'GET', url: '/status.json' })
    ).json() as StatusReport;
    const page = await ctx.testApp.app.inject({ method: 'GET', url: '/status' });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.ok(page.body.includes(`Status: ${json.status}`));
    // Within the cache window, the page and the JSON are one report.
    assert.ok(page.body.includes(json.checked_at));
    assert.ok(page.body.includes('1 running'));
    assert.ok(!page.body.includes('<script'));
    const login = await ctx.testApp.app.inject({ method: 'GET', url: '/login' });
    assert.ok(login.body.includes('href="/status"'));
  });

  test('RLY-10: no tenant data: the names, ids and handle of a tenant appear nowhere in /status.json or /status', async () => {
    const secrets = [marker, tenant.user.tenant_id, tenant.user.id, agentId];
    for (const url of ['/status.json', '/status']) {
      const body = (await ctx.testApp.app.inject({ method: 'GET', url })).body;
      for (const value of secrets) assert.ok(!body.includes(value), `${url} shows ${value}`);
    }
    const keys = JSON.stringify(
      (await ctx.testApp.app.inject({ method: 'GET', url: '/status.json' })).json(),
    );
    assert.doesNotMatch(keys, /tenant|agent_id|handle|user/);
  });

  test('RLY-10: two requests within the cache window get one report (one set of reads)', async () => {
    const first = (
      await ctx.testApp.app.inject({ method: 'GET', url: '/status.json' })
    ).json() as StatusReport;
    const second = (
      await ctx.testApp.app.inject({ method: 'GET', url: '/status.json' })
    ).json() as StatusReport;
    assert.equal(second.checked_at, first.checked_at);
  });

  test('RLY-10: the callback rates are the share of deliveries finished in the last hour and day that succeeded', async () => {
    const endpoint = await callbackEndpoint(ctx.db, 'https://hooks.example/cb', {
      tenantId: tenant.user.tenant_id,
    });
    const finished = [
      ['succeeded', '5 minutes'],
      ['succeeded', '10 minutes'],
      ['succeeded', '20 minutes'],
      ['failed', '30 minutes'],
      ['failed', '3 hours'],
      ['failed', '2 days'],
    ];
    for (const [state, ago] of finished) {
      const made = await callbackDeliveryRow(ctx.db, endpoint);
      await withTenant(
        ctx.db.app,
        endpoint.tenantId,
        (tx) => tx`
          update callback_deliveries set state = ${state ?? ''}, attempts = 1,
            finished_at = now() - ${ago ?? ''}::interval
          where id = ${made.id}`,
      );
    }
    // A pending delivery is no outcome yet.
    await callbackDeliveryRow(ctx.db, endpoint);
    assert.deepEqual(await readCallbackFigures(ctx.db.app, 2000), {
      successRateHour: 0.75,
      successRateDay: 0.6,
    });
    // A fresh app (the shared one's report is cached) shows them, judged on the hour.
    const { app } = await buildTestApp(ctx.db);
    try {
      const c = ((await app.inject({ method: 'GET', url: '/status.json' })).json() as StatusReport)
        .components;
      assert.deepEqual(
        {
          status: c.callbacks.status,
          hour: c.callbacks.success_rate_hour,
          day: c.callbacks.success_rate_day,
        },
        { status: callbacksStatus(0.75), hour: 0.75, day: 0.6 },
      );
    } finally {
      await app.close();
    }
  });
});

/**
 * A TCP relay in front of PostgreSQL that can freeze: it keeps every
 * connection open and stops passing bytes either way, which is what a client
 * sees of a SIGSTOPped server (its kernel still holds the connections).
 */
async function freezableRelay(host: string, port: number) {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('data', (chunk) => {
        if (!frozen) to.write(chunk);
      });
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as net.AddressInfo;
  return {
    port: address.port,
    freeze: () => {
      frozen = true;
    },
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('/status.json with a frozen database', () => {
  test('RLY-10: with the database frozen, /status.json says down within the bound, never hangs', async () => {
    const relay = await freezableRelay(ctx.db.target.host, ctx.db.target.port);
    // The production bound on the app pool (ENCLAVE_DB_TIMEOUT_MS default); the status reads' own is shorter.
    const sql: Sql = connect({ ...ctx.db.target, port: relay.port }, ctx.db.appCredentials, {
      max: 2,
      timeoutMs: 5000,
    });
    let app: App | undefined;
    try {
      // The test database with its app pool behind the relay: everything else as every test app is built.
      ({ app } = await buildTestApp({ ...ctx.db, app: sql }));
      // Connections open before the freeze, as a running server's are.
      await sql`select 1`;
      relay.freeze();
      const started = performance.now();
      const response = await app.inject({ method: 'GET', url: '/status.json' });
      const waitedMs = performance.now() - started;
      assert.ok(waitedMs < HANG_MS, `answered after ${Math.round(waitedMs)} ms`);
      assert.equal(response.statusCode, 200);
      const report = response.json() as StatusReport;
      assert.equal(report.status, 'down');
      const c = report.components;
      assert.deepEqual(
        [c.database, c.job_workers, c.queue, c.agent_instances, c.audit_checkpoints].map((x) => x.status),
        ['down', 'down', 'down', 'down', 'down'],
      );
      // The callback rates are read from the same database: down too, not no_data.
      assert.equal(c.callbacks.status, 'down');
      assert.equal(c.database.response_ms, null);
      assert.equal(c.queue.depth, null);
      const page = await app.inject({ method: 'GET', url: '/status' });
      assert.equal(page.statusCode, 200);
      assert.ok(page.body.includes('Status: down'));
    } finally {
      await relay.close();
      await app?.close();
      await sql.end({ timeout: 1 });
    }
  });
});
