// Per-request limits over HTTP against a real server (sandbox-suite.ts runs it for every backend
// and mode): for each limit, a run that fails under the default and fits under a raised limit,
// and one that fits under the default and fails under a lowered one; the ceilings refuse with a
// 400 that names them. The server has TEST_LIMITS (wall 4 s, CPU 3 s, 256 MiB, 32 processes,
// 64 KiB of output) and their ceilings.
import type { Test } from 'tap'
import { TEST_LIMITS, postBody, script, type Target } from './server.js'

const limit = (name: string): number => Number(TEST_LIMITS[name])

/** Starts `n` threads that wait, and returns how many did start (small stacks: under an address
 *  space limit, 40 default stacks of 8 MiB would fail for memory, not for processes). */
const threads = (n: number): string => script(`threading.stack_size(256 * 1024)
stop = threading.Event()
started = []
for _ in range(${n}):
    thread = threading.Thread(target=stop.wait)
    try:
        thread.start()
    except RuntimeError:
        break
    started.append(thread)
stop.set()
for thread in started:
    thread.join()
return len(started)`, 'import threading')

const busy = (seconds: number): string => script(`end = time.process_time() + ${seconds}
while time.process_time() < end:
    pass
return "done"`, 'import time')

const allocate = (mib: number): string => script(`block = bytearray(${mib} * 1024 * 1024)
block[::4096] = b"x" * len(block[::4096])
return len(block) // (1024 * 1024)`)

export interface LimitsSuiteOptions {
  /** Read a counter of warm runs, when the server has warm sandboxes: wall, CPU and output limits
   *  must not make a run cold. */
  warmRuns?: () => Promise<number>
}

export async function limitsSuite (t: Test, target: Target, options: LimitsSuiteOptions = {}): Promise<void> {
  const run = async (source: string, limits?: Record<string, number>): Promise<Record<string, any>> => {
    const reply = await postBody(target, { script: source, ...(limits !== undefined ? { limits } : {}) })
    return { status: reply.status, ...reply.body }
  }

  await t.test('wall time', async t => {
    const sleep = (s: number): string => script(`time.sleep(${s})\nreturn "done"`, 'import time')
    const long = limit('LIMIT_WALL_MS') / 1000 + 0.4
    t.equal((await run(sleep(long))).code, 'TIME_LIMIT_EXCEEDED', `deny: ${long} s is over the default`)
    t.equal((await run(sleep(long), { wallMs: limit('LIMIT_WALL_MS') + 2000 })).result, 'done', 'allow: it fits a raised wallMs')
    t.equal((await run(sleep(0.6))).result, 'done', 'allow: 0.6 s fits the default')
    const lowered = await run(sleep(0.6), { wallMs: 300 })
    t.equal(lowered.code, 'TIME_LIMIT_EXCEEDED', 'deny: not a lowered wallMs')
    t.match(lowered.message, /300 ms/, 'the message gives the run\'s own limit')
  })

  await t.test('CPU time', async t => {
    const over = limit('LIMIT_CPU_S') + 0.3
    t.equal((await run(busy(over))).code, 'TIME_LIMIT_EXCEEDED', `deny: ${over} s of CPU is over the default`)
    t.equal((await run(busy(over), { cpuSeconds: limit('LIMIT_CPU_S') + 2, wallMs: 10_000 })).result, 'done', 'allow: it fits a raised cpuSeconds')
    t.equal((await run(busy(1.3))).result, 'done', 'allow: 1.3 s fits the default')
    const lowered = await run(busy(1.3), { cpuSeconds: 1 })
    t.equal(lowered.code, 'TIME_LIMIT_EXCEEDED', 'deny: not a lowered cpuSeconds')
    t.match(lowered.message, /1 s of CPU/)
  })

  await t.test('memory', async t => {
    const over = limit('LIMIT_MEMORY_MB') + 60
    t.equal((await run(allocate(over))).code, 'MEMORY_LIMIT_EXCEEDED', `deny: ${over} MiB is over the default`)
    t.equal((await run(allocate(over), { memoryMb: limit('LIMIT_MEMORY_MB_MAX') })).result, over, 'allow: it fits a raised memoryMb')
    t.equal((await run(allocate(120))).result, 120, 'allow: 120 MiB fits the default')
    t.equal((await run(allocate(120), { memoryMb: 80 })).code, 'MEMORY_LIMIT_EXCEEDED', 'deny: not a lowered memoryMb')
  })

  await t.test('processes', async t => {
    const over = limit('LIMIT_PROCESSES') + 8
    t.ok((await run(threads(over))).result < over, `deny: ${over} threads are over the default`)
    t.equal((await run(threads(over), { processes: limit('LIMIT_PROCESSES_MAX') })).result, over, 'allow: they fit a raised processes')
    t.equal((await run(threads(12))).result, 12, 'allow: 12 threads fit the default')
    t.ok((await run(threads(12), { processes: 8 })).result < 12, 'deny: not a lowered processes')
  })

  await t.test('output bytes', async t => {
    const print = (n: number): string => script(`sys.stdout.write("x" * ${n})\nreturn "done"`, 'import sys')
    const over = limit('LIMIT_OUTPUT_BYTES') * 2
    t.equal((await run(print(over))).stdoutTruncated, true, `deny: ${over} bytes are over the default`)
    const raised = await run(print(over), { outputBytes: limit('LIMIT_OUTPUT_BYTES_MAX') })
    t.equal(raised.stdout.length, over, 'allow: they fit a raised outputBytes')
    t.equal(raised.stdoutTruncated, undefined)
    t.equal((await run(print(10_000))).stdout.length, 10_000, 'allow: 10,000 bytes fit the default')
    const lowered = await run(print(10_000), { outputBytes: 2048 })
    t.equal(lowered.stdout.length, 2048, 'deny: a lowered outputBytes cuts them')
    t.equal(lowered.stdoutTruncated, true)
  })

  await t.test('a limit above its ceiling is a 400 naming it, and nothing runs', async t => {
    const cases: Array<[string, number, string]> = [
      ['wallMs', 60_001, 'LIMIT_WALL_MS_MAX'],
      ['cpuSeconds', 61, 'LIMIT_CPU_S_MAX'],
      ['memoryMb', limit('LIMIT_MEMORY_MB_MAX') + 1, 'LIMIT_MEMORY_MB_MAX'],
      ['processes', limit('LIMIT_PROCESSES_MAX') + 1, 'LIMIT_PROCESSES_MAX'],
      ['outputBytes', limit('LIMIT_OUTPUT_BYTES_MAX') + 1, 'LIMIT_OUTPUT_BYTES_MAX']
    ]
    for (const [name, value, ceiling] of cases) {
      const reply = await run('print("ran")\ndef main():\n    return 1\n', { [name]: value })
      t.equal(reply.status, 400, name)
      t.equal(reply.code, 'INVALID_REQUEST')
      t.match(reply.message, `body.limits.${name} is ${value}, above this server's ceiling (${ceiling})`)
      t.equal(reply.stdout, undefined, 'nothing ran')
    }
    const below = await run('def main():\n    return 1\n', { memoryMb: 1 })
    t.equal(below.status, 400)
    t.equal(below.message, 'body.limits.memoryMb must be at least 64')
    const unknown = await run('def main():\n    return 1\n', { wall: 5 })
    t.match(unknown.message, 'unknown field "wall" in body.limits; the fields are "wallMs", "cpuSeconds", "memoryMb", "processes", "outputBytes"')
    const file = await postBody(target, { script: 'def main():\n    return 1\n', files: [{ path: 'a', content: '', mode: 7 }] })
    t.match(file.body.message, 'unknown field "mode" in body.files.0; the fields are "path", "content", "encoding"', 'a file\'s fields, in a file')
  })

  if (options.warmRuns !== undefined) {
    const warmRuns = options.warmRuns
    await t.test('wall, CPU and output limits run warm; other memory or processes run cold', async t => {
      const hello = 'def main():\n    return 1\n'
      const before = await warmRuns()
      await run(hello, { wallMs: 3000, cpuSeconds: 2, outputBytes: 4096 })
      t.equal(await warmRuns(), before + 1, 'a warm run')
      await run(hello, { memoryMb: limit('LIMIT_MEMORY_MB_MAX') })
      await run(hello, { processes: limit('LIMIT_PROCESSES_MAX') })
      t.equal(await warmRuns(), before + 1, 'two cold runs')
    })
  }
}
