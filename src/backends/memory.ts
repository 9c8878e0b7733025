// The memory "rungs" a jail backend can bound a run's memory with, strongest first, and what each
// means for /readyz. nsjail and unshare probe them in this order; every rung passes the same canaries.

export type MemoryRung = 'cgroupv2' | 'cgroupv1' | 'rlimit'
export const MEMORY_RUNGS: readonly MemoryRung[] = ['cgroupv2', 'cgroupv1', 'rlimit']

/** True when a cgroup bounds the whole run; its breach is then a SIGKILL rather than a MemoryError. */
export function boundsWholeRun (rung: MemoryRung): boolean {
  return rung !== 'rlimit'
}

/** What a backend's memory limit bounds, for /readyz's `memoryBound`: a cgroup bounds a whole run
 *  (every process, and the kernel memory they cause); RLIMIT_AS alone bounds each process. */
export const MEMORY_BOUND_PER_RUN = 'per run: all its processes together, and the kernel memory they cause'
export const MEMORY_BOUND_PER_PROCESS = 'per process: a run\'s total memory is not bounded'

/** /readyz's memory facts of the rung a probe chose; `cgroupFailures`: why the stronger rungs failed. */
export function memoryFeatures (rung: MemoryRung, cgroupFailures: string[]): Record<string, string> {
  const perProcess = !boundsWholeRun(rung)
  return {
    memory: rung,
    memoryBound: perProcess ? MEMORY_BOUND_PER_PROCESS : MEMORY_BOUND_PER_RUN,
    ...(perProcess && cgroupFailures.length > 0 ? { memoryCgroups: cgroupFailures.join('; ') } : {})
  }
}

/** The warning a backend gives when only RLIMIT_AS bounds memory. */
export function perProcessMemoryWarning (backend: string, cgroupFailures: string[]): string {
  return `${backend}: memory is bounded per process only (RLIMIT_AS): the processes of one run together, and the ` +
    `kernel memory they cause (socket buffers), are not bounded${cgroupFailures.length > 0 ? `; no memory cgroup passed (${cgroupFailures.join('; ')})` : ''}. See README, "Security model"`
}
