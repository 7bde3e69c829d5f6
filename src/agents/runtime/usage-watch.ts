import { sandboxMemoryBytes } from './sandbox-process.ts';
import { volumeUsageBytes } from './volume-image.ts';

// Limits measured from the host (AGT-6), for what no kernel mechanism
// enforces here. The volume, only where the host has no volume images and
// the operator allowed it (ENCLAVE_UNENFORCED_LIMITS=volume; otherwise the
// start is refused): RLIMIT_FSIZE stops any one file at the limit
// at once, and the total is measured by walking the tree, at an interval
// that grows with what a walk costs (1 s for a small volume, at most a
// minute). Memory, only where no cgroup limits it: the resident memory of
// every process in the sandbox's pid namespace, each second. An instance
// over a limit is stopped with the reason "volume over its limit" or
// "memory over its limit". A burst faster than the interval can overshoot
// before it is caught: these are not hard limits (docs/runtime.md).

const MIB = 1024 * 1024;

/** Calls onOver once when measure() exceeds limitBytes; returns the function that stops watching. */
function startUsageWatch(
  measure: () => Promise<number>,
  limitBytes: number,
  onOver: () => void,
  interval: { minMs: number; maxMs: number },
): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const check = async () => {
    const began = performance.now();
    const used = await measure();
    if (stopped) return;
    if (used > limitBytes) {
      onOver();
      return;
    }
    const cost = performance.now() - began;
    timer = setTimeout(check, Math.min(interval.maxMs, Math.max(interval.minMs, cost * 50)));
    timer.unref();
  };
  timer = setTimeout(check, interval.minMs);
  timer.unref();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export function startVolumeWatch(dir: string, limitMb: number, onOver: () => void): () => void {
  return startUsageWatch(() => volumeUsageBytes(dir), limitMb * MIB, onOver, { minMs: 1000, maxMs: 60_000 });
}

export function startMemoryWatch(sandboxPid: number, limitMb: number, onOver: () => void): () => void {
  return startUsageWatch(() => sandboxMemoryBytes(sandboxPid), limitMb * MIB, onOver, {
    minMs: 1000,
    maxMs: 5000,
  });
}
