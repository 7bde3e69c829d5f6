import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

// Freezing and stopping a test cluster's PostgreSQL from outside, as an
// outage would: by its data directory's postmaster.pid.

export function postmasterPid(pgDir: string): number {
  return Number(readFileSync(path.join(pgDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
}

export function alive(pid: number): boolean {
  // 0 and below would signal a process group, not one process.
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether the cluster's postmaster is running (frozen counts): its pid file is there and names a live process. */
export function postgresRunning(pgDir: string): boolean {
  try {
    return alive(postmasterPid(pgDir));
  } catch {
    return false;
  }
}

/** The postmaster and every process it forked (each backend calls setsid, so there is no one group to signal). */
export function signalPostgres(pgDir: string, signal: NodeJS.Signals): void {
  const postmaster = postmasterPid(pgDir);
  const children = readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === postmaster; // field 4: ppid
      } catch {
        return false; // exited meanwhile
      }
    });
  for (const pid of [postmaster, ...children.map(Number)]) process.kill(pid, signal);
}
