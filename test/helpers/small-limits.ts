// Limits for unit tests that run stand-in processes (a fake zygote, /bin/sh): small, and the
// same wherever such a process is started.
import type { Limits } from '../../src/backends/backend.js'

export const SMALL_LIMITS: Readonly<Limits> = Object.freeze({
  wallTimeMs: 5000,
  killGraceMs: 500,
  cpuSeconds: 5,
  memoryMiB: 256,
  processes: 16,
  openFiles: 64,
  tmpMiB: 16,
  tmpFiles: 1024,
  outputBytes: 1 << 16,
  resultBytes: 1 << 16,
  filesOut: 100,
  filesOutBytes: 8 * 1024 * 1024
})
