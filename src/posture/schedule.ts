// When the posture verifiers run (OPS-5): every ENCLAVE_POSTURE_INTERVAL_MINUTES
// (hourly by default), each check at its own minute so they do not all load
// the database at once, and how old a latest run may be before /security calls
// it stale: a worker that stopped running them must not leave an old pass
// reading as current.

/** Minutes that divide an hour or a day evenly, so one crontab line says each. */
export const POSTURE_INTERVALS: readonly number[] = [
  5, 10, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440,
];
export const DEFAULT_POSTURE_INTERVAL_MINUTES = 60;

/** The first check's minute; the others follow 7 minutes apart (modulo a shorter interval). */
const FIRST_MINUTE = 3;
const CHECK_SPACING_MINUTES = 7;

const every = (step: number, from: number, below: number): string => {
  const values: number[] = [];
  for (let value = from; value < below; value += step) values.push(value);
  return values.join(',');
};

/** The crontab match of the `index`th check when the verifiers run every `intervalMinutes`. */
export function postureCronMatch(index: number, intervalMinutes: number): string {
  const minute = FIRST_MINUTE + index * CHECK_SPACING_MINUTES;
  if (intervalMinutes < 60) return `${every(intervalMinutes, minute % intervalMinutes, 60)} * * * *`;
  const hours = intervalMinutes / 60;
  return `${minute} ${hours === 1 ? '*' : every(hours, 0, 24)} * * *`;
}

/** A latest run that finished longer ago than this is stale: two intervals, so one late or missed run is not. */
export const staleAfterMs = (intervalMinutes: number): number => 2 * intervalMinutes * 60_000;
