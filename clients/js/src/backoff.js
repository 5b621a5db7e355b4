// Reconnect delays: exponential backoff with full jitter (AWS Architecture
// Blog, "Exponential Backoff And Jitter"): attempt n waits a uniformly random
// time in [0, min(max, initial * 2^n)).

/**
 * The delay before reconnect attempt `attempt` (0 for the first).
 * @param {number} attempt
 * @param {{initialMs: number, maxMs: number}} policy
 * @param {() => number} [random] uniform in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, policy, random = Math.random) {
  const ceiling = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
