// How execution slots map to host uids when the server is root: each slot has uids of its own,
// so RLIMIT_NPROC (counted per uid) is per slot, and no run shares a uid with another slot's run,
// a probe, or a warm jail's zygote. One definition: the backends, the configuration's bounds and
// its description all read it.

/** CONCURRENCY's maximum: slots are 0 … MAX_SLOTS - 1. */
export const MAX_SLOTS = 256
/** A slot's successive warm jails alternate between slot and slot + MAX_SLOTS, so the two that
 *  overlap during a hand-over never share RLIMIT_NPROC. */
export const SUCCESSOR_UID_OFFSET = MAX_SLOTS
/** A warm jail's zygote runs as its run's uid + this: above every run's uid (slots and successors). */
export const ZYGOTE_UID_OFFSET = 2 * MAX_SLOTS
/** Probes run in a slot no request uses, so a script filling its slot's process limit cannot make
 *  a re-probe fail. Its warm jails use the same offsets. */
export const PROBE_SLOT = 4095

/** Sessions' jails (docs/sessions.md): seat n (0 ≤ n < MAX_SESSION_SEATS, the open sessions and
 *  their spares) uses base + SESSION_UID_OFFSET + n, a uid no slot, successor, zygote or probe
 *  uses, so a session never shares RLIMIT_NPROC or a uid with anything else. */
export const SESSION_UID_OFFSET = 4 * MAX_SLOTS
export const MAX_SESSION_SEATS = 1024
/** A session's parent (pid 1, uid 0 of its jail, as a zygote) runs as its seat's uid + this:
 *  base + 2048 + seat, above every seat and below the probe's uids. */
export const SESSION_PARENT_UID_OFFSET = MAX_SESSION_SEATS

// The whole layout from the base: 0-255 slots, 256-511 their successors, 512-1023 their zygotes
// (+512), 1024-2047 session seats (their kernels), 2048-3071 the seats' parents, 4095 the probe
// slot (4351 its successor, 4607 and 4863 their zygotes). Nothing else.

/** The layout in words, for SANDBOX_UID_BASE's description. */
export const UID_LAYOUT = `slot n uses base+n (its warm jails alternate with base+${SUCCESSOR_UID_OFFSET}+n, probes use ` +
  `base+${PROBE_SLOT}; a warm jail's zygote runs as its run's uid + ${ZYGOTE_UID_OFFSET}; sessions use base+${SESSION_UID_OFFSET}+seat, ` +
  `their parents base+${SESSION_UID_OFFSET + SESSION_PARENT_UID_OFFSET}+seat)`
/** The uids a server may use from its base: every slot, successor, zygote and probe uid. */
export const UID_SPAN = PROBE_SLOT + SUCCESSOR_UID_OFFSET + ZYGOTE_UID_OFFSET + 1
