// The system calls the seccomp policy refuses (x86-64 numbers), and a script that tries each
// through ctypes and reports [return value, errno].
export const REFUSED_SYSCALLS: Record<string, number> = {
  ptrace: 101,
  process_vm_readv: 310,
  process_vm_writev: 311,
  mount: 165,
  umount2: 166,
  pivot_root: 155,
  chroot: 161,
  unshare: 272,
  setns: 308,
  bpf: 321,
  userfaultfd: 323,
  perf_event_open: 298,
  keyctl: 250,
  add_key: 248,
  request_key: 249,
  kexec_load: 246,
  kexec_file_load: 320,
  init_module: 175,
  finit_module: 313,
  delete_module: 176,
  open_by_handle_at: 304,
  name_to_handle_at: 303,
  reboot: 169,
  swapon: 167,
  swapoff: 168,
  acct: 163,
  clock_settime: 227,
  settimeofday: 164,
  adjtimex: 159,
  clock_adjtime: 305,
  syslog: 103,
  quotactl: 179,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  clone3: 435,
  lookup_dcookie: 212,
  vhangup: 153,
  setsid: 112,
  fanotify_init: 300,
  io_setup: 206,
  io_destroy: 207,
  io_getevents: 208,
  io_submit: 209,
  io_cancel: 210,
  io_pgetevents: 333,
  inotify_init: 253,
  inotify_init1: 294,
  inotify_add_watch: 254
}

/** Arguments that make a call meaningful rather than trivially invalid. */
const ARGS: Record<string, string> = {
  unshare: '0x10000000', // CLONE_NEWUSER
  ptrace: '0, 0, 0, 0', // PTRACE_TRACEME
  io_uring_setup: '8, 0',
  io_setup: '0, 0', // EINVAL where nothing filters it
  inotify_init1: '0'
}

export function syscallScript (names: string[]): string {
  return `import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [ret, ctypes.get_errno()]
def main():
    return {
${names.map(n => `        "${n}": call(${String(REFUSED_SYSCALLS[n])}${ARGS[n] !== undefined ? ', ' + ARGS[n] : ''}),`).join('\n')}
    }
`
}

/** clone() asking for a new user namespace (flags CLONE_NEWUSER | SIGCHLD). */
export const NESTED_USERNS_CLONE = `import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def main():
    ret = libc.syscall(ctypes.c_long(56), ctypes.c_long(0x10000000 | 17), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if ret == 0:
        libc._exit(0)  # the child, had the filter let it through
    return [ret, ctypes.get_errno()]
`

/** int 0x80 getpid: the 32-bit ABI. */
export const I386_SYSCALL = `import ctypes, mmap
def main():
    code = bytes([0xb8, 20, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20; int 0x80; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    return ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
`
