import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { useTestApp } from '../../test/helpers/app.ts';
import { getPage, ORIGIN, postForm, type SignedUp, signUp, textOf } from '../../test/helpers/pages.ts';

// The agent pages (AGT-1): onboarding from a template, credential metadata
// and add/rotate/delete, settings, deletion. VLT-2: a credential typed into
// a page is never shown again by any page (only its last 4), not even the
// form that refused it. TEN-4: another tenant's agent is answered like one
// that does not exist.

const AGENTS = '/dashboard/agents';

// A test template: a required credential with a format, and an optional one.
const templatesDir = mkdtempSync(path.join(tmpdir(), 'enclave-agent-pages-'));
writeFileSync(
  path.join(templatesDir, 'strict.json'),
  JSON.stringify({
    id: 'strict',
    name: 'Strict',
    description: 'A template with a required, formatted credential.',
    command: ['node', 'strict/agent.mjs'],
    port: 8080,
    prefix: 'zz',
    model_gateway: false,
    credentials: [
      {
        name: 'api_key',
        description: 'The service API key.',
        required: true,
        env: 'API_KEY',
        pattern: '^key-[a-z0-9]{16,}$',
        pattern_description: 'key- and at least 16 lower-case letters or digits',
      },
      { name: 'extra_token', description: 'Anything extra.', required: false, env: 'EXTRA_TOKEN' },
    ],
  }),
);
const ctx = useTestApp({ ENCLAVE_TEMPLATES_DIR: templatesDir });
ctx.after(() => rmSync(templatesDir, { recursive: true, force: true }));

/** A credential value no page may ever contain: distinctive, and long enough to have a last 4. */
const canary = (label: string) => `canary-${label}-${randomUUID().replaceAll('-', '')}`;
const strictKey = () => `key-${randomUUID().replaceAll('-', '')}`;

function agentIdOf(location: unknown): string {
  const id = /^\/dashboard\/agents\/([0-9a-f-]{36})\?notice=agent-created$/.exec(String(location))?.[1];
  assert.ok(id !== undefined, `redirected to the new agent (${String(location)})`);
  return id;
}

async function onboard(
  owner: SignedUp,
  fields: Record<string, string>,
  options: { supportAccess?: boolean } = {},
): Promise<string> {
  // An unticked checkbox is not sent at all.
  const support = options.supportAccess === false ? {} : { support_access: 'on' };
  const response = await postForm(
    ctx.testApp.app,
    AGENTS,
    { name: 'An agent', description: '', ...support, ...fields },
    owner,
  );
  assert.equal(response.statusCode, 303, response.body);
  return agentIdOf(response.headers.location);
}

const get = (owner: SignedUp | undefined, url: string) =>
  getPage(ctx.testApp.app, url, { cookie: owner?.cookie });

/** Every page an agent appears on, and its JSON, as its owner sees them. */
async function everyPage(owner: SignedUp, id: string): Promise<string[]> {
  const urls = [
    AGENTS,
    `${AGENTS}/${id}`,
    `${AGENTS}/${id}/delete`,
    `${AGENTS}/new`,
    `${AGENTS}/new?template=echo`,
  ];
  const bodies = await Promise.all(urls.map(async (url) => (await get(owner, url)).body));
  const api = await ctx.testApp.app.inject({
    method: 'GET',
    url: `/api/v1/agents/${id}`,
    headers: { cookie: owner.cookie },
  });
  assert.equal(api.statusCode, 200);
  return [...bodies, api.body];
}

async function agentCount(): Promise<number> {
  const [row] = await ctx.db.superuser<{ count: number }[]>`select count(*)::int as count from agents`;
  return row?.count ?? 0;
}

describe('agent list and onboarding', () => {
  let owner: SignedUp;
  ctx.before(async () => {
    owner = await signUp(ctx.testApp.app, ctx.db, { username: 'onboarder', email: 'onboarder@example.com' });
  });

  test('AGT-1: the list is empty at first; the nav and the dashboard link to it', async () => {
    const list = await get(owner, AGENTS);
    assert.equal(list.statusCode, 200);
    assert.equal(list.headers['cache-control'], 'no-store');
    assert.match(list.body, /No agents yet\./);
    assert.match(list.body, /<nav>.*<a href="\/dashboard\/agents">Agents<\/a>/);
    assert.match(list.body, /<a href="\/dashboard\/agents\/new">Onboard an agent<\/a>/);
    const dashboard = await get(owner, '/dashboard');
    assert.match(dashboard.body, /<li><a href="\/dashboard\/agents">Agents<\/a>/);
  });

  test('AGT-1: the template picker is a GET form; an unknown template is said to be unknown', async () => {
    const picker = await get(owner, `${AGENTS}/new`);
    assert.equal(picker.statusCode, 200);
    assert.match(picker.body, /<form method="get" action="\/dashboard\/agents\/new"/);
    for (const id of ['echo', 'llm-chat', 'strict']) {
      assert.match(picker.body, new RegExp(`name="template" type="radio" value="${id}"`));
    }
    assert.match(picker.body, /Credentials: echo_token \(optional\)\./);
    assert.match(picker.body, /Credentials: api_key \(required\); extra_token \(optional\)\./);
    assert.match(picker.body, /Credentials: at least one of anthropic_api_key, openai_api_key\./);
    for (const url of [`${AGENTS}/new?template=nope`, `${AGENTS}/new?template=__proto__`]) {
      const unknown = await get(owner, url);
      assert.equal(unknown.statusCode, 404, url);
      assert.match(unknown.body, /That template is not installed/);
    }
    const extra = await get(owner, `${AGENTS}/new?template=echo&x=1`);
    assert.equal(extra.statusCode, 400);
    assert.match(extra.body, /Choose a template\./);
  });

  test('AGT-1, VLT-2: a template form asks for each credential in a password field, never pre-filled, labelled with its description, need and format in words (never a regular expression)', async () => {
    const echo = await get(owner, `${AGENTS}/new?template=echo`);
    assert.equal(echo.statusCode, 200);
    assert.match(
      echo.body,
      /<input id="f-credential_echo_token" name="credential_echo_token" type="password" autocomplete="new-password" aria-describedby="f-credential_echo_token-help">/,
    );
    assert.match(echo.body, /<label for="f-credential_echo_token">echo_token \(optional\)<\/label>/);
    assert.match(echo.body, /Any test value\. The echo agent reports only its last 4 characters/);
    // Support access is on by default, with what it means.
    assert.match(echo.body, /name="support_access" type="checkbox" value="on" checked/);
    assert.match(
      echo.body,
      /the platform operator may open a shell inside this agent&#39;s sandbox to give support, and every such session is recorded in the audit log; when off, nothing in the sandbox accepts a support connection\./,
    );

    const strict = await get(owner, `${AGENTS}/new?template=strict`);
    assert.match(
      strict.body,
      /name="credential_api_key" type="password" required autocomplete="new-password"/,
    );
    assert.match(strict.body, /api_key \(required\)/);
    assert.match(
      strict.body,
      /The service API key\. Required\. Expected format: key- and at least 16 lower-case letters or digits\./,
    );
    assert.ok(!strict.body.includes('^key-'), 'the page never shows the regular expression');

    const llm = await get(owner, `${AGENTS}/new?template=llm-chat`);
    assert.match(llm.body, /This template needs at least one of anthropic_api_key, openai_api_key\./);
    assert.match(
      llm.body,
      /<label for="f-credential_anthropic_api_key">anthropic_api_key \(at least one of the group\)/,
    );
    assert.match(
      llm.body,
      /Supply at least one of anthropic_api_key, openai_api_key\. Expected format: starts with sk-ant-\./,
    );
    assert.match(llm.body, /Expected format: starts with sk-, and not with sk-ant-\./);
    for (const expression of ['(^sk-ant-)', '^sk-(?!ant-)', '^sk-ant-']) {
      assert.ok(!llm.body.includes(expression), `the page never shows ${expression}`);
    }
  });

  test('AGT-1, VLT-2: onboarding an echo agent stores the canary, shows its last 4 and the provision record, and no page shows the canary again', async () => {
    const secret = canary('echo');
    const id = await onboard(owner, {
      template: 'echo',
      name: 'Echo one',
      handle: 'echo-one',
      description: 'Says it back',
      credential_echo_token: secret,
    });
    const detail = await get(owner, `${AGENTS}/${id}?notice=agent-created`);
    assert.equal(detail.statusCode, 200);
    assert.match(detail.body, /The agent was onboarded\./);
    assert.match(detail.body, /<h1>Echo one<\/h1>/);
    assert.match(detail.body, /<dt>Handle<\/dt><dd><code>echo-one<\/code><\/dd>/);
    assert.match(detail.body, /<dt>Support access<\/dt><dd>on<\/dd>/);
    assert.ok(detail.body.includes(`<code>…${secret.slice(-4)}</code>`), 'the last 4 are shown');
    // The provision record: the template, support access, and only whether each credential was provided.
    assert.match(
      textOf(detail.body),
      /Provision record .* Template echo Support access on Credentials provided echo_token : yes/,
    );

    const list = await get(owner, AGENTS);
    assert.match(list.body, new RegExp(`<a href="/dashboard/agents/${id}">Echo one</a>`));
    assert.doesNotMatch(list.body, /No agents yet/);

    for (const body of await everyPage(owner, id))
      assert.ok(!body.includes(secret), 'no page shows the canary');
    assert.ok(
      ctx.testApp.logLines().every((line) => !line.includes(secret)),
      'no log line holds the canary',
    );
  });

  test('AGT-5: support access left unticked is off, on the agent and in its provision record', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-private' }, { supportAccess: false });
    const detail = await get(owner, `${AGENTS}/${id}`);
    assert.equal(detail.statusCode, 200);
    assert.match(detail.body, /<dt>Support access<\/dt><dd>off<\/dd>/);
    assert.match(textOf(detail.body), /Credentials provided echo_token : no/);
  });
});

describe('onboarding errors', () => {
  let owner: SignedUp;
  ctx.before(async () => {
    owner = await signUp(ctx.testApp.app, ctx.db, { username: 'mistaken', email: 'mistaken@example.com' });
    await onboard(owner, { template: 'echo', handle: 'taken-handle' });
  });

  test('the onboarding form shows every broken rule at once, each once, by its field, in words', async () => {
    const response = await postForm(
      ctx.testApp.app,
      AGENTS,
      {
        name: 'Many mistakes',
        template: 'llm-chat',
        handle: 'admin',
        credential_anthropic_api_key: 'sk-proj-x',
      },
      owner,
    );
    assert.equal(response.statusCode, 400);
    assert.match(response.body, /<p class="error" role="alert">Check the 2 fields marked below\.<\/p>/);
    for (const [id, message] of [
      ['f-handle', 'Handle is reserved.'],
      [
        'f-credential_anthropic_api_key',
        'anthropic_api_key does not have the format template &quot;llm-chat&quot; expects for anthropic_api_key (starts with sk-ant-).',
      ],
    ] as const) {
      assert.equal(response.body.split(message).length - 1, 1, `${message} is shown once`);
      assert.ok(
        response.body.includes(`<p class="error" id="${id}-error">${message}</p>`),
        `${message} by its field`,
      );
    }
    assert.ok(!/Credentials: template/.test(response.body), 'a supplied but refused key is not also missing');
    assert.ok(!response.body.includes('(?!'), 'no regular expression');
  });

  test('VLT-2: each refused form is shown again with the field and the rule, keeps the name and handle, and never the credential', async () => {
    const cases: [string, Record<string, string>, number, RegExp][] = [
      [
        'a missing required credential',
        { template: 'strict', handle: 'strict-one', credential_extra_token: '' },
        400,
        /api_key is required by template &quot;strict&quot;\./,
      ],
      [
        'a credential not in the format',
        { template: 'strict', handle: 'strict-two', credential_api_key: '' },
        400,
        /api_key does not have the format template &quot;strict&quot; expects for api_key \(key- and at least 16 lower-case letters or digits\)\./,
      ],
      ['a taken handle', { template: 'echo', handle: 'taken-handle' }, 409, /Handle: this handle is taken\./],
      [
        'a malformed handle',
        { template: 'echo', handle: 'Bad_Handle!' },
        400,
        /Handle must be 3 to 40 characters of a-z, 0-9 and &quot;-&quot;/,
      ],
      ['a reserved handle', { template: 'echo', handle: 'admin' }, 400, /Handle is reserved\./],
      [
        'no key of a one_of group',
        { template: 'llm-chat', handle: 'chatty' },
        400,
        /Credentials: template &quot;llm-chat&quot; needs at least one of anthropic_api_key, openai_api_key/,
      ],
      [
        'a credential the template lacks',
        { template: 'echo', handle: 'echo-extra', credential_api_key: '' },
        400,
        /api_key is not a credential of template &quot;echo&quot;\./,
      ],
      [
        'a blank name',
        { template: 'echo', handle: 'echo-blank', name: '   ' },
        400,
        /Give the agent a name\./,
      ],
      [
        'a field the form does not have',
        { template: 'echo', handle: 'echo-odd', owner: 'x' },
        400,
        /a field this page does not accept/,
      ],
      [
        'a support-access value other than on',
        { template: 'echo', handle: 'echo-yes', support_access: 'yes' },
        400,
        /Support access is not valid\./,
      ],
    ];
    for (const [what, fields, status, says] of cases) {
      const secret = canary('refused');
      // Every credential field of the case carries the canary (the format case: a value that breaks it).
      const filled = Object.fromEntries(
        Object.entries(fields).map(([key, value]) => [key, key.startsWith('credential_') ? secret : value]),
      );
      const response = await postForm(
        ctx.testApp.app,
        AGENTS,
        { name: 'Refused agent', description: 'kept', support_access: 'on', ...filled },
        owner,
      );
      assert.equal(response.statusCode, status, `${what}: ${response.body.slice(0, 300)}`);
      assert.match(response.body, says, what);
      assert.ok(!response.body.includes(secret), `${what}: the page does not contain the credential`);
      assert.match(response.body, /role="alert"/, what);
      if (fields.name === undefined)
        assert.match(response.body, /value="Refused agent"/, `${what}: the name is kept`);
      assert.doesNotMatch(response.body, /type="password" value=/, what);
    }
    assert.equal(
      (await get(owner, AGENTS)).body.match(/<tr><td><a href/g)?.length,
      1,
      'only the first agent exists',
    );
  });

  test('AGT-1: an unknown template sends the form back to the picker with the reason', async () => {
    const secret = canary('unknown-template');
    const before = await agentCount();
    const response = await postForm(
      ctx.testApp.app,
      AGENTS,
      { name: 'Lost', handle: 'lost-agent', template: 'no-such', credential_echo_token: secret },
      owner,
    );
    assert.equal(response.statusCode, 400);
    assert.match(response.body, /Template is not an installed agent template\./);
    assert.match(response.body, /name="template" type="radio"/);
    assert.ok(!response.body.includes(secret));
    assert.equal(await agentCount(), before);
  });

  test('a form with a field twice is refused before anything reads it, and the reply does not hold the value', async () => {
    const secret = canary('twice');
    const before = await agentCount();
    const body = new URLSearchParams([
      ['name', 'Twice'],
      ['handle', 'twice-agent'],
      ['template', 'echo'],
      ['credential_echo_token', secret],
      ['credential_echo_token', secret],
    ]).toString();
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: AGENTS,
      headers: { origin: ORIGIN, cookie: owner.cookie, 'content-type': 'application/x-www-form-urlencoded' },
      payload: body,
    });
    assert.equal(response.statusCode, 400);
    assert.ok(!response.body.includes(secret));
    assert.equal(await agentCount(), before);
  });
});

describe('an agent page', () => {
  let owner: SignedUp;
  ctx.before(async () => {
    owner = await signUp(ctx.testApp.app, ctx.db, { username: 'keeper', email: 'keeper@example.com' });
  });

  test('VLT-2, VLT-4: a credential is added, rotated and deleted from the page (after a confirmation page); only its last 4 are ever shown', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-rotate', credential_echo_token: '' });
    const empty = await get(owner, `${AGENTS}/${id}`);
    assert.match(textOf(empty.body), /echo_token Any test value\..* not set/);
    assert.match(empty.body, /<option value="echo_token">echo_token \(not set\)<\/option>/);
    assert.match(empty.body, /name="value" type="password" required autocomplete="new-password"/);

    const first = canary('first');
    const added = await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}/credentials`,
      { name: 'echo_token', value: first },
      owner,
    );
    assert.equal(added.statusCode, 303);
    assert.equal(added.headers.location, `${AGENTS}/${id}?notice=credential-added`);
    const afterAdd = await get(owner, String(added.headers.location));
    assert.match(afterAdd.body, /The credential was added\./);
    assert.ok(afterAdd.body.includes(`<code>…${first.slice(-4)}</code>`));
    assert.match(afterAdd.body, new RegExp(`echo_token \\(set, ends …${first.slice(-4)}\\)`));

    const second = canary('second');
    const rotated = await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}/credentials`,
      { name: 'echo_token', value: second },
      owner,
    );
    assert.equal(rotated.headers.location, `${AGENTS}/${id}?notice=credential-rotated`);
    const afterRotate = await get(owner, String(rotated.headers.location));
    assert.match(afterRotate.body, /The credential was replaced with the new value\./);
    assert.ok(afterRotate.body.includes(`<code>…${second.slice(-4)}</code>`));
    assert.ok(!afterRotate.body.includes(`…${first.slice(-4)}<`));

    // A value under 16 characters shows nothing of itself.
    const short = 'short-Zq9x';
    await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}/credentials`,
      { name: 'echo_token', value: short },
      owner,
    );
    const afterShort = await get(owner, `${AGENTS}/${id}`);
    assert.match(afterShort.body, /<span class="muted" title="Too short to show any of it">—<\/span>/);
    assert.ok(!afterShort.body.includes('Zq9x'));

    for (const body of await everyPage(owner, id)) {
      for (const value of [first, second, short]) assert.ok(!body.includes(value));
    }

    // Deleting asks first: the page's link leads to a confirmation that deletes nothing by itself.
    const listed = await get(owner, `${AGENTS}/${id}`);
    assert.ok(
      listed.body.includes(
        `<a href="${AGENTS}/${id}/credentials/echo_token/delete" aria-label="Delete the credential echo_token">Delete…</a>`,
      ),
    );
    const question = await get(owner, `${AGENTS}/${id}/credentials/echo_token/delete`);
    assert.equal(question.statusCode, 200);
    assert.match(question.body, /<h1>Delete the credential echo_token of [^<]+\?<\/h1>/);
    assert.ok(
      question.body.includes(`<form method="post" action="${AGENTS}/${id}/credentials/echo_token/delete"`),
    );
    assert.doesNotMatch(
      (await get(owner, `${AGENTS}/${id}`)).body,
      /echo_token \(not set\)/,
      'asking deletes nothing',
    );
    assert.equal((await get(owner, `${AGENTS}/${id}/credentials/nope/delete`)).statusCode, 404);

    const deleted = await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}/credentials/echo_token/delete`,
      {},
      owner,
    );
    assert.equal(deleted.statusCode, 303);
    assert.equal(deleted.headers.location, `${AGENTS}/${id}?notice=credential-deleted`);
    const afterDelete = await get(owner, String(deleted.headers.location));
    assert.match(afterDelete.body, /The credential was deleted\./);
    assert.match(afterDelete.body, /echo_token \(not set\)/);
    const again = await postForm(ctx.testApp.app, `${AGENTS}/${id}/credentials/echo_token/delete`, {}, owner);
    assert.equal(again.statusCode, 404);
    assert.match(again.body, /There is no such credential/);
  });

  test('VLT-2: a refused credential is explained by field and rule, and the value is not on the page', async () => {
    const id = await onboard(owner, {
      template: 'strict',
      handle: 'strict-keeper',
      credential_api_key: strictKey(),
    });
    const cases: [Record<string, string>, RegExp][] = [
      [
        { name: 'api_key', value: canary('badformat') },
        /New value does not have the format template &quot;strict&quot; expects for api_key/,
      ],
      [
        { name: 'nope', value: canary('noname') },
        /nope is not a credential of template &quot;strict&quot;\./,
      ],
      [{ name: 'api_key', value: '' }, /New value must not be empty\./],
      [{ name: 'Not A Name', value: canary('badname') }, /Credential is not valid\./],
      [{ name: 'api_key', value: canary('extra'), also: 'x' }, /a field this page does not accept/],
    ];
    for (const [fields, says] of cases) {
      const response = await postForm(ctx.testApp.app, `${AGENTS}/${id}/credentials`, fields, owner);
      assert.equal(response.statusCode, 400, String(says));
      assert.match(response.body, says);
      if (fields.value !== '') assert.ok(!response.body.includes(fields.value ?? ''), String(says));
      assert.doesNotMatch(response.body, /type="password" value=/);
    }
  });

  test('AGT-1: a credential the template requires is not deleted; the page says to replace it', async () => {
    const key = strictKey();
    const id = await onboard(owner, { template: 'strict', handle: 'strict-needs', credential_api_key: key });
    const response = await postForm(ctx.testApp.app, `${AGENTS}/${id}/credentials/api_key/delete`, {}, owner);
    assert.equal(response.statusCode, 400);
    assert.match(
      response.body,
      /api_key is required by template &quot;strict&quot;: save a new value for it instead of deleting it\./,
    );
    assert.ok(response.body.includes(`<code>…${key.slice(-4)}</code>`), 'it is still there');
    assert.ok(!response.body.includes(key));
  });

  test('AGT-5: support access is turned off and on again; name and description change', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-settings' });
    const off = await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}`,
      { name: 'Renamed', description: 'New words' },
      owner,
    );
    assert.equal(off.statusCode, 303);
    assert.equal(off.headers.location, `${AGENTS}/${id}?notice=agent-updated`);
    const afterOff = await get(owner, String(off.headers.location));
    assert.match(afterOff.body, /The changes were saved\./);
    assert.match(afterOff.body, /<h1>Renamed<\/h1>/);
    assert.match(afterOff.body, /<dt>Description<\/dt><dd>New words<\/dd>/);
    assert.match(afterOff.body, /<dt>Support access<\/dt><dd>off<\/dd>/);
    assert.match(afterOff.body, /name="support_access" type="checkbox" value="on" aria-describedby/);
    // The provision record keeps what was asked for at onboarding.
    assert.match(textOf(afterOff.body), /Provision record .* Support access on/);

    const on = await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}`,
      { name: 'Renamed', description: '', support_access: 'on' },
      owner,
    );
    assert.equal(on.statusCode, 303);
    const afterOn = await get(owner, `${AGENTS}/${id}`);
    assert.match(afterOn.body, /<dt>Support access<\/dt><dd>on<\/dd>/);
    assert.match(afterOn.body, /name="support_access" type="checkbox" value="on" checked/);

    const [audit] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from audit_events where action = 'agent.updated' and target = ${`agent:${id}`}`;
    assert.equal(audit?.count, 2, 'each change is in the audit log');

    for (const [fields, says] of [
      [{ name: ' ' }, /Give the agent a name\./],
      [{ name: 'n'.repeat(101) }, /Name is too long\./],
      [{ name: 'x', support_access: 'true' }, /Support access is not valid\./],
      [{ name: 'x', handle: 'new-handle' }, /a field this page does not accept/],
    ] as const) {
      const refused = await postForm(ctx.testApp.app, `${AGENTS}/${id}`, fields, owner);
      assert.equal(refused.statusCode, 400, String(says));
      assert.match(refused.body, says);
    }
    assert.match((await get(owner, `${AGENTS}/${id}`)).body, /<h1>Renamed<\/h1>/);
  });

  test('AGT-4: the settings form sets an egress allowlist, one domain per line; a bad line is explained and nothing changes', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-allowlist' });
    const set = await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}`,
      { name: 'Allowlisted', egress_allowlist: 'API.github.com\r\n\r\n*.example.com\n' },
      owner,
    );
    assert.equal(set.statusCode, 303, set.body);
    const page = await get(owner, `${AGENTS}/${id}`);
    assert.match(
      page.body,
      /<textarea id="f-egress_allowlist"[^>]*>api\.github\.com\n\*\.example\.com<\/textarea>/,
    );
    const refused = await postForm(
      ctx.testApp.app,
      `${AGENTS}/${id}`,
      { name: 'Allowlisted', egress_allowlist: 'ok.example.com\nhttp://evil.test/' },
      owner,
    );
    assert.equal(refused.statusCode, 400);
    assert.match(refused.body, /line 2 is not a domain such as api.github.com/);
    const [row] = await ctx.db.superuser<{ egress_allowlist: string[] }[]>`
      select egress_allowlist from agents where id = ${id}::uuid`;
    assert.deepEqual(row?.egress_allowlist, ['api.github.com', '*.example.com']);
    await postForm(ctx.testApp.app, `${AGENTS}/${id}`, { name: 'Allowlisted', egress_allowlist: '' }, owner);
    const [cleared] = await ctx.db.superuser<{ egress_allowlist: string[] | null }[]>`
      select egress_allowlist from agents where id = ${id}::uuid`;
    assert.equal(cleared?.egress_allowlist, null, 'empty opens egress to public destinations again');
  });

  test('AGT-6: Start on the agent page asks for the instance to run; the page shows its state and, once given, its address with a copy button', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-start' });
    const before = await get(owner, `${AGENTS}/${id}`);
    assert.match(textOf(before.body), /Instance State Stopped/);
    assert.match(before.body, /given at its first start/);
    const started = await postForm(ctx.testApp.app, `${AGENTS}/${id}/start`, {}, owner);
    assert.equal(started.statusCode, 303);
    const after = await get(owner, String(started.headers.location));
    assert.match(textOf(after.body), /Starting the agent/);
    assert.match(textOf(after.body), /State Stopped \(asked to run\)/);
    assert.match(after.body, /href="http:\/\/ec[a-z0-9]{8}\.agents\.localhost:\d+"/);
    assert.match(
      after.body,
      /id="agent-address">[^<]+<\/a> <button type="button" class="copy" data-copy="agent-address"/,
    );
    assert.match(after.body, /<script src="\/static\/copy-text\.js" defer><\/script>/);
    const [job] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count
      from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
      where t.identifier = 'agent_instance_sync' and j.payload->>'agent_id' = ${id}`;
    assert.equal(job?.count, 1, 'a sync job carries it out');
    const stranger = await signUp(ctx.testApp.app, ctx.db, {
      username: 'stranger-start',
      email: 'stranger-start@example.com',
    });
    const foreign = await postForm(ctx.testApp.app, `${AGENTS}/${id}/stop`, {}, stranger);
    assert.equal(foreign.statusCode, 404, "another tenant's agent cannot be stopped");
  });

  test('AGT-1: deleting an agent takes a confirmation page, then removes it and its credentials', async () => {
    const id = await onboard(owner, {
      template: 'echo',
      handle: 'echo-doomed',
      credential_echo_token: canary('doomed'),
    });
    const detail = await get(owner, `${AGENTS}/${id}`);
    assert.match(detail.body, new RegExp(`<a href="/dashboard/agents/${id}/delete">Delete this agent…</a>`));
    const confirm = await get(owner, `${AGENTS}/${id}/delete`);
    assert.equal(confirm.statusCode, 200);
    assert.match(
      confirm.body,
      /This deletes the agent <code>echo-doomed<\/code>, its 1 credential and its provision record, and cannot be undone\./,
    );
    assert.match(confirm.body, new RegExp(`<form method="post" action="/dashboard/agents/${id}/delete"`));

    const deleted = await postForm(ctx.testApp.app, `${AGENTS}/${id}/delete`, {}, owner);
    assert.equal(deleted.statusCode, 303);
    assert.equal(deleted.headers.location, `${AGENTS}?notice=agent-deleted`);
    const list = await get(owner, String(deleted.headers.location));
    assert.match(list.body, /The agent, its credentials and its provision record were deleted\./);
    assert.doesNotMatch(list.body, /echo-doomed/);
    assert.equal((await get(owner, `${AGENTS}/${id}`)).statusCode, 404);
    const [left] = await ctx.db.superuser<{ count: number }[]>`
      select count(*)::int as count from credentials where agent_id = ${id}::uuid`;
    assert.equal(left?.count, 0);
  });
});

describe('who may reach an agent page', () => {
  test('TEN-4: another tenant’s agent, an unknown id and a malformed id get the same 404 page, and nothing changes', async () => {
    const alice = await signUp(ctx.testApp.app, ctx.db, {
      username: 'alice-pages',
      email: 'alice-pages@example.com',
    });
    const bob = await signUp(ctx.testApp.app, ctx.db, {
      username: 'bob-pages',
      email: 'bob-pages@example.com',
    });
    const secret = canary('alice');
    const id = await onboard(alice, {
      template: 'echo',
      name: 'Alice agent',
      handle: 'alice-agent',
      credential_echo_token: secret,
    });
    const before = (await get(alice, `${AGENTS}/${id}`)).body;

    const probes = (target: string): [string, string, Record<string, string>?][] => [
      ['GET', `${AGENTS}/${target}`],
      ['GET', `${AGENTS}/${target}/delete`],
      ['POST', `${AGENTS}/${target}`, { name: 'Hijacked', description: '', support_access: 'on' }],
      ['POST', `${AGENTS}/${target}/credentials`, { name: 'echo_token', value: canary('bob') }],
      ['POST', `${AGENTS}/${target}/credentials/echo_token/delete`, {}],
      ['POST', `${AGENTS}/${target}/delete`, {}],
    ];
    const answer = async ([method, url, fields]: [string, string, Record<string, string>?]) => {
      const response =
        method === 'GET' ? await get(bob, url) : await postForm(ctx.testApp.app, url, fields ?? {}, bob);
      return { status: response.statusCode, text: textOf(response.body) };
    };
    const foreign = probes(id);
    const unknown = probes(randomUUID());
    const malformed = probes('not-a-uuid');
    for (let i = 0; i < foreign.length; i += 1) {
      const [a, b, c] = await Promise.all(
        [foreign, unknown, malformed].map((list) => answer(list[i] ?? ['GET', '/'])),
      );
      assert.equal(a?.status, 404, foreign[i]?.[1]);
      assert.deepEqual(a, b, `${foreign[i]?.[0]} ${foreign[i]?.[1]}: foreign is answered like unknown`);
      assert.deepEqual(c, b, `${malformed[i]?.[1]}: malformed is answered like unknown`);
      assert.ok(!a?.text.includes('Alice agent'));
    }
    assert.doesNotMatch((await get(bob, AGENTS)).body, /alice-agent/);
    assert.equal((await get(alice, `${AGENTS}/${id}`)).body, before, 'Alice’s agent is unchanged');
  });

  test('ACC-6: signed out, the pages send you to sign in and the forms do nothing', async () => {
    const list = await get(undefined, AGENTS);
    assert.equal(list.statusCode, 303);
    assert.equal(list.headers.location, '/login?next=%2Fdashboard%2Fagents');
    const form = await get(undefined, `${AGENTS}/new?template=echo`);
    assert.equal(form.headers.location, '/login?next=%2Fdashboard%2Fagents%2Fnew%3Ftemplate%3Decho');
    const before = await agentCount();
    const posted = await postForm(ctx.testApp.app, AGENTS, {
      name: 'x',
      handle: 'anon-agent',
      template: 'echo',
    });
    assert.equal(posted.statusCode, 303);
    assert.equal(posted.headers.location, '/login');
    assert.equal(await agentCount(), before);
  });

  test('ACC-4: a cross-site form post cannot delete an agent', async () => {
    const owner = await signUp(ctx.testApp.app, ctx.db, {
      username: 'csrf-target',
      email: 'csrf-target@example.com',
    });
    const id = await onboard(owner, { template: 'echo', handle: 'echo-csrf' });
    const response = await ctx.testApp.app.inject({
      method: 'POST',
      url: `${AGENTS}/${id}/delete`,
      headers: {
        origin: 'https://evil.example',
        cookie: owner.cookie,
        'content-type': 'application/x-www-form-urlencoded',
      },
      payload: '',
    });
    assert.equal(response.statusCode, 403);
    assert.equal((await get(owner, `${AGENTS}/${id}`)).statusCode, 200);
  });
});

describe('an instance’s state on the agent pages', () => {
  let owner: SignedUp;
  ctx.before(async () => {
    owner = await signUp(ctx.testApp.app, ctx.db, { username: 'stateful', email: 'stateful@example.com' });
  });

  /** The runtime's side of the instance, as the worker would leave it. */
  const runtimeSets = async (id: string, state: string, desired: string) => {
    await ctx.db.superuser`
      update agent_instances set state = ${state}, desired_state = ${desired} where agent_id = ${id}::uuid`;
  };
  /** Which of Start, Stop and Restart the page leaves enabled. */
  const enabledButtons = (body: string) =>
    [...body.matchAll(/<button type="submit" data-action="(start|stop|restart)"( disabled)?>/g)]
      .filter((match) => match[2] === undefined)
      .map((match) => match[1]);

  test('AGT-6: the agent list shows each instance’s state', async () => {
    const idle = await onboard(owner, { template: 'echo', handle: 'echo-idle', name: 'Idle one' });
    const busy = await onboard(owner, { template: 'echo', handle: 'echo-busy', name: 'Busy one' });
    assert.equal((await postForm(ctx.testApp.app, `${AGENTS}/${busy}/start`, {}, owner)).statusCode, 303);
    await runtimeSets(busy, 'running', 'running');
    const list = textOf((await get(owner, AGENTS)).body);
    assert.match(list, /Name Handle Template State Support access Created/);
    assert.match(list, /Idle one echo-idle Echo Stopped on/);
    assert.match(list, /Busy one echo-busy Echo Running on/);
    assert.ok(idle !== busy);
  });

  test('AGT-6: Start, Stop and Restart are enabled only when they make sense for the state', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-buttons' });
    const buttons = async () => enabledButtons((await get(owner, `${AGENTS}/${id}`)).body);
    assert.deepEqual(await buttons(), ['start'], 'never started');
    assert.equal((await postForm(ctx.testApp.app, `${AGENTS}/${id}/start`, {}, owner)).statusCode, 303);
    assert.deepEqual(await buttons(), ['stop'], 'asked to run, not yet starting');
    await runtimeSets(id, 'starting', 'running');
    assert.deepEqual(await buttons(), ['stop'], 'starting');
    await runtimeSets(id, 'running', 'running');
    assert.deepEqual(await buttons(), ['stop', 'restart'], 'running');
    await runtimeSets(id, 'stopping', 'stopped');
    assert.deepEqual(await buttons(), ['start'], 'stopping');
    await runtimeSets(id, 'stopped', 'stopped');
    assert.deepEqual(await buttons(), ['start'], 'stopped');
    await runtimeSets(id, 'crashed', 'running');
    assert.deepEqual(await buttons(), ['start', 'stop', 'restart'], 'crashed after its restarts');
  });

  test('AGT-6: while a start is under way the page offers Refresh and its state script, and GET …/state answers the state as JSON', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-live' });
    const settled = (await get(owner, `${AGENTS}/${id}`)).body;
    assert.match(settled, /<a href="\/dashboard\/agents\/[0-9a-f-]{36}" data-refresh hidden>Refresh<\/a>/);
    assert.match(settled, /<script src="\/static\/agent-state\.js" defer><\/script>/);
    assert.doesNotMatch(settled, /data-settling/);
    assert.equal((await postForm(ctx.testApp.app, `${AGENTS}/${id}/start`, {}, owner)).statusCode, 303);
    const starting = (await get(owner, `${AGENTS}/${id}`)).body;
    assert.match(starting, /data-settling/);
    assert.match(starting, /<a href="\/dashboard\/agents\/[0-9a-f-]{36}" data-refresh>Refresh<\/a>/);

    const state = async (who: SignedUp, agentId = id) =>
      ctx.testApp.app.inject({
        method: 'GET',
        url: `${AGENTS}/${agentId}/state`,
        headers: { cookie: who.cookie },
      });
    const asked = await state(owner);
    assert.equal(asked.statusCode, 200);
    assert.deepEqual(asked.json(), {
      line: 'Stopped (asked to run)',
      settling: true,
      actions: { start: false, stop: true, restart: false },
    });
    await runtimeSets(id, 'running', 'running');
    assert.deepEqual((await state(owner)).json(), {
      line: 'Running',
      settling: false,
      actions: { start: false, stop: true, restart: true },
    });

    const script = await ctx.testApp.app.inject({ method: 'GET', url: '/static/agent-state.js' });
    assert.equal(script.statusCode, 200);
    assert.match(String(script.headers['content-type']), /javascript/);

    const stranger = await signUp(ctx.testApp.app, ctx.db, {
      username: 'stranger-state',
      email: 'stranger-state@example.com',
    });
    const foreign = await state(stranger);
    assert.equal(foreign.statusCode, 404, 'TEN-4: another tenant’s agent');
    assert.doesNotMatch(foreign.body, /Running/);
    assert.equal((await state(owner, randomUUID())).statusCode, 404);
    const malformed = await state(owner, 'not-a-uuid');
    assert.equal(malformed.statusCode, 400, 'as the JSON API answers a malformed id');
    assert.match(String(malformed.headers['content-type']), /^application\/problem\+json/);
    assert.deepEqual(
      malformed.json().errors.map((error: { field: string }) => error.field),
      ['id'],
    );
  });

  test('AGT-4: a DNS failure in the egress log reads as a failure, a destination the policy refuses as refused', async () => {
    const id = await onboard(owner, { template: 'echo', handle: 'echo-egress' });
    await ctx.db.superuser`
      insert into egress_connections
        (tenant_id, agent_id, host, port, method, allowed, reason, bytes_out, bytes_in, duration_ms, started_at)
      select tenant_id, id, r.host, 443, 'CONNECT', r.allowed, r.reason, 0, 0, 5, now()
      from agents, (values
        ('slow.example', false, 'DNS timeout (no answer within 5 s)'),
        ('nowhere.example', false, 'DNS lookup failed (ENOTFOUND)'),
        ('metadata.example', false, 'resolves to a cloud metadata address'),
        ('fine.example', true, null)) as r(host, allowed, reason)
      where agents.id = ${id}::uuid`;
    const text = textOf((await get(owner, `${AGENTS}/${id}`)).body);
    assert.match(text, /slow\.example:443 CONNECT failed: DNS timeout \(no answer within 5 s\)/);
    assert.match(text, /nowhere\.example:443 CONNECT failed: DNS lookup failed \(ENOTFOUND\)/);
    assert.match(text, /metadata\.example:443 CONNECT refused \(resolves to a cloud metadata address\)/);
    assert.match(text, /fine\.example:443 CONNECT allowed /);
    assert.doesNotMatch(text, /refused \(DNS/);
  });
});
