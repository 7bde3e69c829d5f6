import { Worker } from 'node:worker_threads';
import { AppError } from '../errors.ts';
import { CURRENT_PARAMS, type PasswordCheck, type ScryptParams } from './passwords.ts';

// Password hashing off the event loop and off libuv's thread pool: a fixed
// number of worker threads (password-worker.ts), each running one scrypt at a
// time, behind a bounded queue. libuv's four threads are what file reads,
// dns.lookup and TLS key work share; scrypt there made a sign-in storm delay
// static files and DNS by minutes. Here a storm waits only for these workers,
// and past the queue's bound it is refused at once (429 with Retry-After)
// instead of delaying everything.
//
// Memory: each running check holds 128·N·r bytes (128 MiB at the current
// parameters), so scrypt's share of the process is at most workers × that;
// a queued check holds only its password.

/** `params`: the scrypt parameters of new hashes (and of the dummy a burn checks against). */
export type PasswordJob = { readonly params: ScryptParams } & (
  | { readonly op: 'hash'; readonly password: string }
  | { readonly op: 'verify'; readonly password: string; readonly stored: string }
  | { readonly op: 'burn'; readonly password: string }
);

export interface PasswordReply {
  readonly ok: boolean;
  readonly value: string | PasswordCheck | undefined;
  readonly message?: string;
}

/** Every worker is busy and the queue is full (or the pool is closing): retry later. */
export class PasswordChecksBusyError extends AppError<'password_checks_busy'> {
  readonly retryAfterSeconds: number;

  constructor(retryAfterSeconds: number) {
    super(
      'password_checks_busy',
      `Too many sign-ins are being checked right now. Try again in ${retryAfterSeconds} second${retryAfterSeconds === 1 ? '' : 's'}.`,
    );
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The client left while its check was still queued: the check is dropped, no worker spends a hash on it. */
export class PasswordCheckAbandonedError extends AppError<'client_gone'> {
  constructor() {
    super('client_gone', 'The client closed the connection before its password was checked.');
  }
}

export interface PasswordPoolOptions {
  /** Worker threads; each runs one scrypt at a time. */
  readonly workers: number;
  /** Checks that may wait for a free worker; one more is refused with PasswordChecksBusyError. */
  readonly queue: number;
  /**
   * scrypt parameters for new hashes: CURRENT_PARAMS unless given. Only the
   * test app passes cheaper ones (buildApp refuses them in production), so a
   * suite that makes hundreds of accounts does not spend minutes hashing.
   */
  readonly params?: ScryptParams;
}

export interface PasswordPoolStats {
  readonly workers: number;
  readonly queueLimit: number;
  readonly running: number;
  readonly queued: number;
  /** Checks a worker has finished (each one scrypt, or none for a stored hash that is not ours). */
  readonly checked: number;
  /** The most checks ever running at once: never more than `workers`. */
  readonly peakRunning: number;
  /** Checks refused because the queue was full. */
  readonly refused: number;
  /** Queued checks dropped because their client left before a worker took them. */
  readonly abandoned: number;
}

/** What the accounts services use. `signal` aborts a check still waiting in the queue. */
export interface PasswordHasher {
  /** Throws PasswordChecksBusyError if a check would be refused now: lets a caller refuse before any database work. */
  admit(): void;
  hash(password: string, signal?: AbortSignal): Promise<string>;
  verify(password: string, stored: string, signal?: AbortSignal): Promise<PasswordCheck>;
  /** The work of a wrong password, against no account (ACC-6). */
  burn(password: string, signal?: AbortSignal): Promise<void>;
}

export interface PasswordPool extends PasswordHasher {
  stats(): PasswordPoolStats;
  /** Refuses new checks, answers queued ones busy, and ends the workers. */
  close(): Promise<void>;
}

interface Task {
  readonly job: PasswordJob;
  readonly resolve: (value: PasswordReply['value']) => void;
  readonly reject: (error: Error) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

interface Thread {
  readonly worker: Worker;
  task: Task | undefined;
  startedAt: number;
}

const WORKER_URL = new URL('./password-worker.ts', import.meta.url);
/** Milliseconds per check assumed before any has finished (for Retry-After). */
const FIRST_ESTIMATE_MS = 1000;

export function createPasswordPool(options: PasswordPoolOptions): PasswordPool {
  const params = options.params ?? CURRENT_PARAMS;
  const threads: Thread[] = [];
  const queue: Task[] = [];
  let running = 0;
  let checked = 0;
  let peakRunning = 0;
  let refused = 0;
  let abandoned = 0;
  let averageMs = FIRST_ESTIMATE_MS;
  let closed = false;

  /** Seconds for the checks ahead to clear: those running and queued, spread over the workers, at the recent pace. */
  function busy(): PasswordChecksBusyError {
    const ahead = (running + queue.length) / options.workers;
    return new PasswordChecksBusyError(Math.max(1, Math.ceil((ahead * averageMs) / 1000)));
  }

  function hasRoom(): boolean {
    return !closed && running + queue.length < options.workers + options.queue;
  }

  function start(thread: Thread, task: Task): void {
    task.signal?.removeEventListener('abort', task.onAbort);
    thread.task = task;
    thread.startedAt = performance.now();
    running += 1;
    peakRunning = Math.max(peakRunning, running);
    // A check in progress keeps the process up; an idle pool does not.
    thread.worker.ref();
    thread.worker.postMessage(task.job);
  }

  function settle(thread: Thread): Task | undefined {
    const task = thread.task;
    if (task === undefined) return undefined;
    thread.task = undefined;
    running -= 1;
    thread.worker.unref();
    return task;
  }

  function spawn(): Thread {
    const thread: Thread = { worker: new Worker(WORKER_URL), task: undefined, startedAt: 0 };
    thread.worker.unref();
    thread.worker.on('message', (reply: PasswordReply) => {
      const task = settle(thread);
      if (task === undefined) return;
      checked += 1;
      averageMs = 0.8 * averageMs + 0.2 * (performance.now() - thread.startedAt);
      if (reply.ok) task.resolve(reply.value);
      else task.reject(new Error(`password check failed: ${reply.message ?? 'unknown error'}`));
      dispatch();
    });
    // An uncaught error in the worker ends it; 'exit' follows and settles its task.
    thread.worker.on('error', () => {});
    thread.worker.on('exit', () => {
      threads.splice(threads.indexOf(thread), 1);
      settle(thread)?.reject(closed ? busy() : new Error('password worker exited during a check'));
      if (!closed) dispatch();
    });
    threads.push(thread);
    return thread;
  }

  function dispatch(): void {
    while (queue.length > 0) {
      const thread =
        threads.find((candidate) => candidate.task === undefined) ??
        (threads.length < options.workers ? spawn() : undefined);
      const task = thread === undefined ? undefined : queue.shift();
      if (thread === undefined || task === undefined) return;
      start(thread, task);
    }
  }

  function submit(job: PasswordJob, signal: AbortSignal | undefined): Promise<PasswordReply['value']> {
    if (signal?.aborted === true) return Promise.reject(new PasswordCheckAbandonedError());
    if (!hasRoom()) {
      refused += 1;
      return Promise.reject(busy());
    }
    const { promise, resolve, reject } = Promise.withResolvers<PasswordReply['value']>();
    const task: Task = {
      job,
      resolve,
      reject,
      signal,
      onAbort: () => {
        const at = queue.indexOf(task);
        if (at === -1) return;
        queue.splice(at, 1);
        abandoned += 1;
        reject(new PasswordCheckAbandonedError());
      },
    };
    signal?.addEventListener('abort', task.onAbort, { once: true });
    queue.push(task);
    dispatch();
    return promise;
  }

  return {
    admit() {
      if (!hasRoom()) {
        refused += 1;
        throw busy();
      }
    },

    async hash(password, signal) {
      const value = await submit({ op: 'hash', password, params }, signal);
      if (typeof value !== 'string') throw new Error('password worker answered a hash with no string');
      return value;
    },

    async verify(password, stored, signal) {
      const value = await submit({ op: 'verify', password, stored, params }, signal);
      if (typeof value !== 'object') throw new Error('password worker answered a check with no result');
      return value;
    },

    async burn(password, signal) {
      await submit({ op: 'burn', password, params }, signal);
    },

    stats() {
      return {
        workers: options.workers,
        queueLimit: options.queue,
        running,
        queued: queue.length,
        checked,
        peakRunning,
        refused,
        abandoned,
      };
    },

    async close() {
      closed = true;
      for (const task of queue.splice(0)) {
        task.signal?.removeEventListener('abort', task.onAbort);
        task.reject(busy());
      }
      await Promise.all(threads.map((thread) => thread.worker.terminate()));
    },
  };
}
