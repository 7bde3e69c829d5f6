import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../../test/helpers/database.ts';
import { createMailer } from './mailer.ts';

// OPS-2: with ENCLAVE_SMTP_URL, mail goes out over SMTP (a minimal SMTP
// server here records the conversation); a refused send throws, so its job
// is retried. Without SMTP, in development only, mail lands in the outbox.

interface Received {
  readonly commands: string[];
  readonly data: string;
}

/** Just enough SMTP for nodemailer: greeting, EHLO, MAIL, RCPT, DATA, QUIT. */
async function fakeSmtpServer(options: { refuseRecipients: boolean }): Promise<{
  server: Server;
  port: number;
  received: Received[];
}> {
  const received: Received[] = [];
  const server = createServer((socket) => {
    socket.setEncoding('utf8');
    const reply = (line: string) => socket.write(`${line}\r\n`);
    let buffer = '';
    let data: string[] | undefined;
    const commands: string[] = [];
    reply('220 fake.test ESMTP');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      for (let end = buffer.indexOf('\r\n'); end !== -1; end = buffer.indexOf('\r\n')) {
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (data !== undefined) {
          if (line === '.') {
            received.push({ commands: [...commands], data: data.join('\n') });
            data = undefined;
            reply('250 2.0.0 queued');
          } else data.push(line.startsWith('..') ? line.slice(1) : line);
          continue;
        }
        const verb = line.slice(0, 4).toUpperCase();
        commands.push(line);
        if (verb === 'EHLO') reply('250 fake.test');
        else if (verb === 'HELO' || verb === 'MAIL' || verb === 'RSET' || verb === 'NOOP') reply('250 OK');
        else if (verb === 'RCPT') reply(options.refuseRecipients ? '550 5.1.1 no such user' : '250 OK');
        else if (verb === 'DATA') {
          data = [];
          reply('354 go ahead');
        } else if (verb === 'QUIT') {
          reply('221 bye');
          socket.end();
        } else reply('502 not implemented');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return { server, port: address.port, received };
}

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(() => db.drop());

const message = {
  to: 'someone@example.com',
  subject: 'Hello there',
  text: 'Line one\n.dot line\nhttps://x.test/a',
};

describe('SMTP', () => {
  test('OPS-2: with ENCLAVE_SMTP_URL set, a message goes out over SMTP from ENCLAVE_MAIL_FROM', async () => {
    const smtp = await fakeSmtpServer({ refuseRecipients: false });
    const mailer = createMailer(
      {
        env: 'production',
        smtpUrl: `smtp://127.0.0.1:${smtp.port}`,
        mailFrom: 'Enclave <no-reply@enclave.example>',
      },
      db.app,
    );
    try {
      assert.equal(mailer.kind, 'smtp');
      await mailer.send(message);
      const [sent] = smtp.received;
      assert.ok(sent !== undefined, 'the server received a message');
      assert.ok(sent.commands.some((line) => /^MAIL FROM:<no-reply@enclave\.example>/i.test(line)));
      assert.ok(sent.commands.some((line) => /^RCPT TO:<someone@example\.com>/i.test(line)));
      assert.match(sent.data, /^Subject: Hello there$/m);
      assert.match(sent.data, /^From: Enclave <no-reply@enclave\.example>$/m);
      assert.match(sent.data, /^\.dot line$/m);
      assert.match(sent.data, /https:\/\/x\.test\/a/);
    } finally {
      mailer.close();
      smtp.server.close();
    }
  });

  test('OPS-2: a send the SMTP server refuses throws, so the job that sent it is retried', async () => {
    const smtp = await fakeSmtpServer({ refuseRecipients: true });
    const mailer = createMailer(
      { env: 'production', smtpUrl: `smtp://127.0.0.1:${smtp.port}`, mailFrom: 'no-reply@enclave.example' },
      db.app,
    );
    try {
      await assert.rejects(mailer.send(message));
      assert.equal(smtp.received.length, 0);
      const [outbox] = await db.superuser<{ count: number }[]>`select count(*)::int as count from dev_outbox`;
      assert.equal(outbox?.count, 0, 'SMTP mail never goes to the outbox');
    } finally {
      mailer.close();
      smtp.server.close();
    }
  });
});

describe('development outbox', () => {
  test('without SMTP, development mail lands in the dev outbox; production refuses to run without SMTP', async () => {
    const mailer = createMailer(
      { env: 'development', smtpUrl: undefined, mailFrom: 'no-reply@localhost' },
      db.app,
    );
    assert.equal(mailer.kind, 'outbox');
    await mailer.send(message);
    const rows = await db.superuser<{ to_address: string; subject: string; body: string }[]>`
      select to_address, subject, body from dev_outbox`;
    assert.deepEqual([...rows], [{ to_address: message.to, subject: message.subject, body: message.text }]);
    assert.throws(
      () => createMailer({ env: 'production', smtpUrl: undefined, mailFrom: 'no-reply@localhost' }, db.app),
      /ENCLAVE_SMTP_URL/,
    );
  });
});
