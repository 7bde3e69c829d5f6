import { constants, setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
import type { PasswordJob, PasswordReply } from './password-pool.ts';
import { burnPasswordCheckSync, hashPasswordSync, verifyPasswordSync } from './passwords.ts';

// One thread of the password pool. scrypt runs synchronously here, so it
// occupies this thread only: the event loop and libuv's pool (files,
// dns.lookup) never wait behind a hash. One job at a time; the pool sends the
// next only after this one's reply.

// On Linux a priority set with pid 0 is this thread's alone: when the cores are
// all busy hashing, the event loop and libuv's threads (static files, DNS) get
// the CPU first. Elsewhere it would lower the whole server, so it is left as is.
if (process.platform === 'linux') setPriority(0, constants.priority.PRIORITY_BELOW_NORMAL);

function run(job: PasswordJob): PasswordReply['value'] {
  switch (job.op) {
    case 'hash':
      return hashPasswordSync(job.password, job.params);
    case 'verify':
      return verifyPasswordSync(job.password, job.stored, job.params);
    case 'burn':
      burnPasswordCheckSync(job.password, job.params);
      return undefined;
  }
}

parentPort?.on('message', (job: PasswordJob) => {
  let reply: PasswordReply;
  try {
    reply = { ok: true, value: run(job) };
  } catch (error) {
    // The message only: the job (and its password) stays on this side.
    reply = { ok: false, value: undefined, message: error instanceof Error ? error.message : 'failed' };
  }
  parentPort?.postMessage(reply);
});
