import { createAccount, type TestAccount } from '../test/helpers/accounts.ts';
import { buildTestApp, type TestApp } from '../test/helpers/app.ts';
import { insertChain } from '../test/helpers/audit.ts';
import type { TestDatabase } from '../test/helpers/database.ts';
import { compare } from './ab.ts';

// `npm run bench -- lists`: reads that must not grow with the tenant (#13).
// The first page of GET /api/v1/agents?limit=10 (through app.inject, with a
// Bearer token: ten rows at every size, so only the tenant's size differs)
// for a tenant of 1,000 and of 10,000 agents against one of 10; the
// audit page (/dashboard/audit, with a session) and an action filter that
// matches nothing for a log of 10,000 and 100,000 events against one of
// 1,000. Aim for each: at most 1.5× the smallest tenant's time, i.e. flat.
// Rows are seeded with SQL: agents straight into their table, events through
// test/helpers/audit.ts insertChain, which the chain triggers check as any
// append (each event JCS, its hash chained to the last).

const AGENT_SIZES = [10, 1_000, 10_000] as const;
const EVENT_SIZES = [1_000, 10_000, 100_000] as const;
/** Events are seeded in runs of one action each, ten actions in turn, as a busy log mixes them. */
const RUN = 1_000;
const ACTIONS = 10;
const FLAT = { atMost: 1.5 } as const;

async function seedAgents(db: TestDatabase, account: TestAccount, count: number): Promise<void> {
  await db.superuser`
    insert into agents (tenant_id, handle, name, template_id)
    select ${account.user.tenant_id}::uuid, 'bench-' || ${count}::int4 || '-' || n, 'Bench agent ' || n, 'echo'
    from generate_series(1, ${count}::int4) n`;
}

async function seedEvents(db: TestDatabase, account: TestAccount, count: number): Promise<void> {
  for (let done = 0; done < count; done += RUN) {
    const times = Array.from({ length: Math.min(RUN, count - done) }, () => new Date());
    await insertChain(db, account.user.tenant_id, times, `bench.action_${(done / RUN) % ACTIONS}`);
  }
}

function get(testApp: TestApp, url: string, headers: Record<string, string>): () => Promise<void> {
  return async () => {
    const response = await testApp.app.inject({ method: 'GET', url, headers });
    if (response.statusCode !== 200) throw new Error(`${url}: ${response.statusCode}`);
  };
}

export async function runListsBench(db: TestDatabase): Promise<void> {
  const testApp = await buildTestApp(db, {}, { passwordCost: 'production' });
  try {
    const agentTenants = new Map<number, TestAccount>();
    for (const size of AGENT_SIZES) {
      const account = await createAccount(db, testApp);
      await seedAgents(db, account, size);
      agentTenants.set(size, account);
    }
    const auditTenants = new Map<number, TestAccount>();
    for (const size of EVENT_SIZES) {
      const account = await createAccount(db, testApp);
      await seedEvents(db, account, size);
      auditTenants.set(size, account);
    }
    await db.superuser`analyze agents, audit_events`;

    const agentList = (size: number) => {
      const account = agentTenants.get(size);
      if (account === undefined) throw new Error(`no tenant of ${size} agents`);
      return {
        label: `GET /api/v1/agents?limit=10, ${size.toLocaleString('en')} agents`,
        op: get(testApp, '/api/v1/agents?limit=10', { authorization: `Bearer ${account.apiToken}` }),
      };
    };
    const [smallest, ...larger] = AGENT_SIZES;
    for (const size of larger) {
      await compare({
        name: `agent list, first page: ${size.toLocaleString('en')} agents vs ${smallest}`,
        ratio: 'time',
        per: { ops: 30 },
        rounds: 10,
        a: agentList(size),
        b: agentList(smallest),
        aim: FLAT,
      });
    }

    for (const [what, url] of [
      ['audit page', '/dashboard/audit'],
      ['audit page, a filter matching nothing', '/dashboard/audit?action=no.such_action'],
    ] as const) {
      const page = (size: number) => {
        const account = auditTenants.get(size);
        if (account === undefined) throw new Error(`no tenant of ${size} events`);
        return {
          label: `${url}, ${size.toLocaleString('en')} events`,
          op: get(testApp, url, { cookie: account.sessionCookie }),
        };
      };
      const [fewest, ...more] = EVENT_SIZES;
      for (const size of more) {
        await compare({
          name: `${what}: ${size.toLocaleString('en')} events vs ${fewest.toLocaleString('en')}`,
          ratio: 'time',
          per: { ops: 20 },
          rounds: 10,
          a: page(size),
          b: page(fewest),
          aim: FLAT,
        });
      }
    }
  } finally {
    await testApp.app.close();
  }
}
