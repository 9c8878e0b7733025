// Files in and out of a run, over real HTTP against a real sandbox (part of the sandbox suite):
// what the caller sends appears in the working directory, what the script leaves under output/
// and its open figures come back, and the attacks on both directions fail (deny/allow pairs).
import type { Test } from 'tap'
import { createHash } from 'node:crypto'
import { TEST_LIMITS, SERVER_SECRET, post, postBody, script, type Reply, type Target } from './server.js'

const limit = (name: string): number => Number(TEST_LIMITS[name])
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

interface ReturnedFile { path: string, size: number, mediaType: string, encoding: 'utf8' | 'base64', content: string }

/** The reply's returned files by path, decoded. */
function filesOf (reply: Reply): Map<string, ReturnedFile & { bytes: Buffer }> {
  const files = (reply.body.files ?? []) as ReturnedFile[]
  return new Map(files.map(f => [f.path, { ...f, bytes: Buffer.from(f.content, f.encoding === 'base64' ? 'base64' : 'utf8') }]))
}

function leftOut (reply: Reply): Record<string, string> {
  return Object.fromEntries(((reply.body.filesLeftOut ?? []) as Array<{ path: string, reason: string }>).map(e => [e.path, e.reason]))
}

async function refused (t: Test, target: Target, files: unknown[], message: RegExp | string, what: string): Promise<void> {
  const reply = await postBody(target, { script: 'def main():\n    return "ran"\n', files })
  t.equal(reply.status, 400, `${what}: 400`)
  t.match(reply.body, { code: 'INVALID_REQUEST', message }, `${what}: ${String(reply.body.message)}`)
}

export async function filesSuite (t: Test, target: Target): Promise<void> {
  await t.test('files in: each at its path before the top level runs, text and bytes exactly', async t => {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
    const reply = await postBody(target, {
      script: script('return [TOP, hashlib.sha256(open("bin/all.bin", "rb").read()).hexdigest(), open("données/é.txt").read(), os.path.getsize(".hidden"), os.getcwd()]',
        'import hashlib, os\nTOP = open("data/in.csv").read()'),
      files: [
        { path: 'data/in.csv', content: 'a,b\n1,2\n' },
        { path: 'bin/all.bin', content: bytes.toString('base64'), encoding: 'base64' },
        { path: 'données/é.txt', content: '✓ unicode', encoding: 'utf8' },
        { path: '.hidden', content: '' }
      ]
    })
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.same(reply.body.result, ['a,b\n1,2\n', createHash('sha256').update(bytes).digest('hex'), '✓ unicode', 0, '/tmp'])
    t.notOk('files' in reply.body, 'input files are not returned: only output/ is')
  })

  await t.test('allow: files named like the harness\'s own, or like modules, are only files', async t => {
    const reply = await postBody(target, {
      script: script('return [numpy.__name__, sorted(n for n in os.listdir(".") if n.endswith(".py"))]', 'import os, numpy'),
      files: ['run.py', 'zygote.py', 'seccomp.py', 'sitecustomize.py', 'numpy.py'].map(path => ({ path, content: 'raise SystemExit("hijacked")\n' }))
    })
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.same(reply.body.result, ['numpy', ['numpy.py', 'run.py', 'seccomp.py', 'sitecustomize.py', 'zygote.py']])
  })

  await t.test('a 4 MiB CSV upload, summarised with pandas', async t => {
    const rows = ['city,temp']
    for (let i = 0, size = 10; size < 4 * 1024 * 1024 - 64; i++) {
      const row = `${['Oslo', 'Lima', 'Pune'][i % 3] ?? ''},${i % 40}`
      rows.push(row)
      size += row.length + 1
    }
    const csv = `${rows.join('\n')}\n`
    const reply = await postBody(target, {
      script: script('df = pd.read_csv("upload.csv")\nreturn {"rows": len(df), "mean": df.groupby("city")["temp"].mean().round(3).to_dict()}', 'import pandas as pd'),
      files: [{ path: 'upload.csv', content: csv }]
    })
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.ok(Buffer.byteLength(csv) <= 4 * 1024 * 1024 && Buffer.byteLength(csv) > 4 * 1024 * 1024 - 128, `${Buffer.byteLength(csv)} bytes`)
    t.equal(reply.body.result.rows, rows.length - 1)
  })

  await t.test('deny: a path that is not a place in the working directory is a 400 naming it; nothing runs', async t => {
    const cases: Array<[string, RegExp]> = [
      ['../escape', /"\.\.\/escape" is not normalised/],
      ['a/../../escape', /is not normalised/],
      ['/etc/passwd', /"\/etc\/passwd" is absolute/],
      ['a//b', /is not normalised/],
      ['./a', /is not normalised/],
      ['a/.', /is not normalised/],
      ['a\u0000b', /holds a control character/],
      ['a\nb', /holds a control character/],
      ['\ud800.txt', /lone surrogate/],
      ['x'.repeat(256), /part longer than 255 bytes/],
      [`${'a/'.repeat(32)}b`, /more than 32 levels deep/],
      [`${'d'.repeat(250)}/`.repeat(5) + 'f', /longer than 1024 bytes/],
      ['output/x.csv', /is under output\//],
      ['output', /is under output\//]
    ]
    for (const [path, message] of cases) await refused(t, target, [{ path, content: 'x' }], message, JSON.stringify(path).slice(0, 40))
  })

  await t.test('allow: the longest and deepest paths the rules permit', async t => {
    const deep = `${'a/'.repeat(31)}b`
    const long = ['x'.repeat(255), 'x'.repeat(255), 'x'.repeat(255), 'x'.repeat(254), 'y'].join('/')
    t.equal(Buffer.byteLength(long), 1024)
    const reply = await postBody(target, {
      script: script(`return [open(${JSON.stringify(deep)}).read(), open(${JSON.stringify(long)}).read()]`),
      files: [{ path: deep, content: 'deep' }, { path: long, content: 'long' }]
    })
    t.same(reply.body.result, ['deep', 'long'], JSON.stringify(reply.body).slice(0, 200))
  })

  await t.test('deny: collisions, bad base64, an unknown encoding', async t => {
    await refused(t, target, [{ path: 'a.txt', content: '1' }, { path: 'a.txt', content: '2' }], /"a\.txt" is given twice/, 'the same path twice')
    await refused(t, target, [{ path: 'a', content: '1' }, { path: 'a/b', content: '2' }], /"a\/b" is under "a", which is a file/, 'a file, then a file under it')
    await refused(t, target, [{ path: 'a/b', content: '1' }, { path: 'a', content: '2' }], /"a" is given twice \(or is also a directory/, 'a directory, then a file in its place')
    await refused(t, target, [{ path: 'b.bin', content: 'abc', encoding: 'base64' }], /body\.files\[0\]\.content is not base64/, 'base64 of a wrong length')
    await refused(t, target, [{ path: 'b.bin', content: 'ab!=', encoding: 'base64' }], /is not base64/, 'base64 with a foreign character')
    await refused(t, target, [{ path: 'b.bin', content: 'YQ==\n', encoding: 'base64' }], /is not base64/, 'base64 with a line break')
    await refused(t, target, [{ path: 'b.bin', content: '61', encoding: 'hex' }], /encoding/, 'an unknown encoding')
    await refused(t, target, [{ path: 'b.bin' }], /content/, 'no content')
  })

  await t.test('deny: count and size bombs in input files are refused before anything runs', async t => {
    const count = 100 // LIMIT_FILES_IN's default
    await refused(t, target, Array.from({ length: count + 1 }, (_, i) => ({ path: `f${i}`, content: '' })), `body.files has ${count + 1} files; the limit is ${count} (LIMIT_FILES_IN)`, 'one file too many')
    const big = 'x'.repeat(8 * 1024 * 1024 + 1)
    await refused(t, target, [{ path: 'big', content: big }], /body\.files\[0\] \("big"\) is 8388609 bytes; the limit is 8388608 \(LIMIT_FILE_IN_BYTES\)/, 'one file over the per-file limit')
    const half = 'x'.repeat(4.5 * 1024 * 1024)
    await refused(t, target, [{ path: 'a', content: half }, { path: 'b', content: half }], /more than 8388608 bytes \(LIMIT_FILES_IN_BYTES\); body\.files\[1\] \("b"\) goes over/, 'the total over its limit')
    // 70 files, each 31 directories deep: 2,170 directories, more than half of LIMIT_TMP_FILES.
    const deep = Array.from({ length: 70 }, (_, i) => ({ path: `${Array.from({ length: 31 }, (_, d) => `d${i}x${d}`).join('/')}/f`, content: '' }))
    await refused(t, target, deep, /need 70 files and 2170 directories/, 'directories that would take the run\'s inodes')
    const allowed = await postBody(target, { script: 'import os\ndef main():\n    return len(os.listdir("."))\n', files: Array.from({ length: count }, (_, i) => ({ path: `f${i}`, content: 'x' })) })
    t.equal(allowed.status, 200, 'allow: exactly LIMIT_FILES_IN files')
    t.ok(allowed.body.result >= count)
  })

  await t.test('deny: one run\'s files (in and out) are never visible to the next run', async t => {
    const first = await postBody(target, {
      script: script('open("output/secret-out.txt", "w").write("run A")\nreturn sorted(os.listdir("."))', 'import os'),
      files: [{ path: 'secret-in.txt', content: 'run A' }]
    })
    t.equal(first.status, 200)
    t.equal(filesOf(first).get('secret-out.txt')?.content, 'run A')
    for (let i = 0; i < 3; i++) { // every warm jail of the pool, not only the one that served run A
      const next = await post(target, script('return [sorted(n for n in os.listdir(".") if not n.startswith(".")), os.listdir("output")]', 'import os'))
      t.same(next.body.result, [['output'], []], 'the next runs see an empty output/ and nothing else')
      t.notOk('files' in next.body)
    }
  })

  await t.test('files out: every regular file under output/, by the encoding rule, with OUTPUT_DIR', async t => {
    const reply = await post(target, script(`
os.makedirs("output/sub/dir")
open("output/report.txt", "w").write("héllo\\nwörld\\t\\r\\n")
open(os.environ["OUTPUT_DIR"] + "/bin.dat", "wb").write(bytes(range(256)))
open("output/control.txt", "w").write("a\\x01b")
open("output/bad-utf8.txt", "wb").write(b"\\xff\\xfe")
open("output/sub/dir/deep.csv", "w").write("a,b\\n")
open("output/empty.json", "w").close()
return os.environ["OUTPUT_DIR"] == os.path.abspath("output")`, 'import os'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.equal(reply.body.result, true, 'OUTPUT_DIR names output/ in the working directory')
    const files = filesOf(reply)
    t.same([...files.keys()].sort(), ['bad-utf8.txt', 'bin.dat', 'control.txt', 'empty.json', 'report.txt', 'sub/dir/deep.csv'])
    t.match(files.get('report.txt'), { encoding: 'utf8', content: 'héllo\nwörld\t\r\n', size: 16, mediaType: 'text/plain' })
    t.match(files.get('bin.dat'), { encoding: 'base64', size: 256, mediaType: 'application/octet-stream' })
    t.same(files.get('bin.dat')?.bytes, Buffer.from(Array.from({ length: 256 }, (_, i) => i)))
    t.match(files.get('control.txt'), { encoding: 'base64', content: Buffer.from('a\u0001b').toString('base64') }, 'a control character makes base64')
    t.match(files.get('bad-utf8.txt'), { encoding: 'base64', content: '//4=' }, 'bytes that are not UTF-8 make base64')
    t.match(files.get('sub/dir/deep.csv'), { encoding: 'utf8', content: 'a,b\n', mediaType: 'text/csv' })
    t.match(files.get('empty.json'), { encoding: 'utf8', content: '', size: 0, mediaType: 'application/json' })
    t.notOk('filesLeftOut' in reply.body, 'nothing left out')
  })

  await t.test('figures: open ones come back as PNG; saved or closed ones are not duplicated', async t => {
    const reply = await post(target, script(`
plt.plot([1, 3, 2])
plt.figure()
plt.bar(["a", "b"], [3, 5])
saved = plt.figure()
saved.gca().plot([0, 1])
saved.savefig("output/saved.png")
elsewhere = plt.figure()
elsewhere.gca().plot([1, 0])
elsewhere.savefig(io.BytesIO(), format="svg")
closed = plt.figure()
plt.close(closed)
taken = plt.figure(9)
open("output/figures/9.png" if os.path.isdir("output/figures") else "output/x", "w")
return plt.get_fignums()`, 'import io, os\nimport matplotlib.pyplot as plt\nos.makedirs("output/figures")'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.same(reply.body.result, [1, 2, 3, 4, 9])
    const files = filesOf(reply)
    t.same([...files.keys()].sort(), ['figures/1.png', 'figures/2.png', 'figures/9-2.png', 'figures/9.png', 'saved.png'])
    for (const name of ['figures/1.png', 'figures/2.png', 'saved.png', 'figures/9-2.png']) {
      t.same(files.get(name)?.bytes.subarray(0, 8), PNG_MAGIC, `${name} is a PNG`)
      t.match(files.get(name), { mediaType: 'image/png', encoding: 'base64' })
    }
    t.equal(files.get('figures/9.png')?.size, 0, 'the script\'s own file keeps its name; the figure takes the next')
  })

  await t.test('a figure that cannot be saved is named with the script\'s words, bounded and valid UTF-8', async t => {
    const reply = await post(target, script(`
figure = plt.figure()
figure.gca().plot([1, 2])
def broken(*args, **kwargs):
    raise ValueError("\\ud800" + "x" * 5000)
figure.savefig = broken
plt.figure().gca().plot([2, 1])
return 1`, 'import matplotlib.pyplot as plt'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    const reason = leftOut(reply)['figures/1.png'] ?? ''
    t.match(reason, /^the figure could not be saved as PNG \(ValueError: \\ud800x+\)$/)
    t.ok(reason.length < 600, `bounded (${reason.length} characters)`)
    t.same([...filesOf(reply).keys()], ['figures/2.png'], 'the other figure still comes back')
  })

  await t.test('deny: a script that leaves every descriptor open, or hundreds of directories, still gets every file back', async t => {
    const exhausted = await post(target, script(`
open("output/kept.txt", "w").write("kept")
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
return len(held) > 100`, 'import os'))
    t.equal(exhausted.status, 200, JSON.stringify(exhausted.body).slice(0, 300))
    t.equal(filesOf(exhausted).get('kept.txt')?.content, 'kept', 'the harness kept descriptors of its own to collect with')
    t.notOk('filesLeftOut' in exhausted.body)
    const wide = await post(target, script(`
for d in range(300):
    os.makedirs(f"output/d{d:03}")
    if d < 50:
        open(f"output/d{d:03}/f", "w").write(str(d))
return 1`, 'import os'))
    t.equal(filesOf(wide).size, 50, 'all 50 files of 300 directories: only the current directory and its ancestors are open')
    t.notOk('filesLeftOut' in wide.body)
  })

  await t.test('deny: figures that are odd, broken or many are named, counted, or refused as documented; never a crash', async t => {
    const numbered = await post(target, script('plt.figure(num=10**300).gca().plot([1])\nreturn 1', 'import matplotlib.pyplot as plt'))
    t.same([...filesOf(numbered).keys()], ['figures/figure-1.png'], 'a number too long for a name: named by position')
    const replaced = await post(target, script('sys.modules["matplotlib.pyplot"] = 42\nreturn 1', 'import sys\nimport matplotlib.pyplot as plt\nplt.plot([1])'))
    t.equal(replaced.status, 200, JSON.stringify(replaced.body).slice(0, 300))
    t.match(leftOut(replaced), { figures: /^the open figures could not be listed \(AttributeError: / })
    for (const raised of ['SystemExit(0)', 'KeyboardInterrupt()', 'Unprintable()']) {
      const reply = await post(target, script(`figure = plt.figure()\nfigure.gca().plot([1])\ndef broken(*args, **kwargs):\n    raise ${raised}\nfigure.savefig = broken\nreturn 1`,
        'import matplotlib.pyplot as plt\nclass Unprintable(Exception):\n    def __str__(self):\n        raise RuntimeError("no")'))
      t.equal(reply.status, 200, `${raised}: ${JSON.stringify(reply.body).slice(0, 200)}`)
      t.match(leftOut(reply)['figures/1.png'], /^the figure could not be saved as PNG \((SystemExit|KeyboardInterrupt|Unprintable)/, raised)
    }
    const big = await post(target, script('for _ in range(5):\n    plt.figure(figsize=(12, 9), dpi=200).gca().plot([1, 2])\nreturn 1', 'import matplotlib.pyplot as plt'))
    t.equal(big.status, 200, `5 figures of 2400x1800 pixels: each closed once saved (${JSON.stringify(big.body).slice(0, 200)})`)
    // Under an address-space limit (the unshare backend's rung) a figure may not fit: it is named.
    const notSaved = Object.values(leftOut(big))
    t.equal(filesOf(big).size + notSaved.length, 5, `every figure returned or named (${notSaved.join('; ')})`)
    t.ok(notSaved.every(reason => reason.includes('MemoryError')), 'a figure is left out only for memory')
    const many = await post(target, script('for _ in range(1000):\n    plt.figure()\nreturn 1', 'import matplotlib.pyplot as plt'))
    t.match(many.body, { code: 'OUTPUT_TOO_LARGE', outputFiles: 1000 }, '1,000 figures are counted, not drawn')
    const overBytes = await post(target, script('open("output/big", "wb").write(b"x" * (9 * 1024 * 1024))\nfor _ in range(3):\n    plt.figure()\nreturn 1', 'import matplotlib.pyplot as plt'))
    t.match(overBytes.body, { code: 'OUTPUT_TOO_LARGE', outputFiles: 4, outputBytes: 9 * 1024 * 1024 }, 'figures counted when the bytes are over too')
  })

  await t.test('deny: a figure never takes a returned path or a directory of one', async t => {
    const underFile = await post(target, script('os.makedirs("output/figures/1.png")\nopen("output/figures/1.png/a.txt", "w").close()\nplt.plot([1])\nreturn 1', 'import os\nimport matplotlib.pyplot as plt'))
    t.same([...filesOf(underFile).keys()].sort(), ['figures/1-2.png', 'figures/1.png/a.txt'])
    const fileNamedFigures = await post(target, script('open("output/figures", "w").close()\nplt.plot([1])\nreturn 1', 'import matplotlib.pyplot as plt'))
    t.same([...filesOf(fileNamedFigures).keys()].sort(), ['figures', 'figures-2/1.png'])
  })

  await t.test('deny: names and text that would mislead a terminal or a reader', async t => {
    const reply = await post(target, script(`
open("output/\\x1b]0;owned\\x07\\x1b[2J", "w").close()
open("output/ok\\u202etxt.exe", "w").close()
open("output/c1.txt", "w").write("a\\u009bb")
return 1`))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.same(leftOut(reply), { '\\x1b]0;owned\\x07\\x1b[2J': 'its name holds control characters', 'ok\\u202etxt.exe': 'its name holds control characters' }, 'shown escaped, never raw')
    t.match(filesOf(reply).get('c1.txt'), { encoding: 'base64' }, 'a C1 control makes base64, as a C0 control does')
    await refused(t, target, [{ path: 'a.txt', content: 'A\udc80B' }], /content is not valid Unicode \(a lone surrogate\); send bytes as base64/, 'a lone surrogate in utf8 content')
    await refused(t, target, [{ path: 'ok\u202etxt.exe', content: '' }], /control character/, 'a bidirectional control in a path')
  })

  await t.test('an exception with a huge or unprintable message is MAIN_RAISED, bounded, never CRASHED', async t => {
    const huge = await post(target, 'def main():\n    raise ValueError("x" * 70000)\n')
    t.match(huge.body, { code: 'MAIN_RAISED', exception: 'ValueError', message: /^ValueError: x+\.\.\. \(70012 characters in all\)$/ })
    const surrogate = await post(target, 'def main():\n    raise ValueError("\\ud800")\n')
    t.match(surrogate.body, { code: 'MAIN_RAISED', message: 'ValueError: \\ud800' })
    const unprintable = await post(target, 'class E(Exception):\n    def __str__(self):\n        raise RuntimeError("no")\ndef main():\n    raise E()\n')
    t.match(unprintable.body, { code: 'MAIN_RAISED', exception: 'sandboxed_script.E' })
  })

  await t.test('files come back only with a result: a run that fails returns none', async t => {
    const reply = await post(target, script('open("output/partial.txt", "w").write("x")\nraise ValueError("late")'))
    t.equal(reply.status, 422)
    t.equal(reply.body.code, 'MAIN_RAISED')
    t.notOk('files' in reply.body)
  })

  await t.test('deny: more files or bytes than the limits is a 422 OUTPUT_TOO_LARGE naming both; allow: exactly the limits', async t => {
    const maxFiles = 100
    const maxBytes = 8 * 1024 * 1024
    const many = await post(target, script(`for i in range(${maxFiles + 1}):\n    open(f"output/f{i}", "w").close()\nreturn 1`))
    t.match(many.body, { code: 'OUTPUT_TOO_LARGE', message: `the script left more than ${maxFiles} files under output/ (figures included); the limits are ${maxFiles} files (LIMIT_FILES_OUT) and ${maxBytes} bytes (LIMIT_FILES_OUT_BYTES)` })
    const bytes = await post(target, script(`open("output/a", "wb").write(b"x" * ${maxBytes / 2})\nopen("output/b", "wb").write(b"x" * ${maxBytes / 2 + 1})\nreturn 1`))
    t.match(bytes.body, { code: 'OUTPUT_TOO_LARGE', outputFiles: 2, outputBytes: maxBytes + 1, message: /left 2 files of 8388609 bytes/ })
    const figure = await post(target, script(`for i in range(${maxFiles}):\n    open(f"output/f{i}", "w").close()\nplt.plot([1])\nreturn 1`, 'import matplotlib.pyplot as plt'))
    t.match(figure.body, { code: 'OUTPUT_TOO_LARGE' }, 'figures count too')
    const exact = await post(target, script(`for i in range(${maxFiles - 1}):\n    open(f"output/f{i}", "w").close()\nopen("output/big", "wb").write(b"\\x00" * ${maxBytes})\nreturn 1`))
    t.equal(exact.status, 200, JSON.stringify(exact.body).slice(0, 200))
    t.equal(filesOf(exact).size, maxFiles)
    t.equal(filesOf(exact).get('big')?.size, maxBytes)
  })

  await t.test('deny: links, FIFOs, sockets and devices under output/ are never followed or read, and are named', async t => {
    const reply = await post(target, script(`
os.symlink("/proc/self/environ", "output/environ")
os.symlink("/tmp", "output/tmp-dir")
os.symlink("../secret.txt", "output/up")
os.symlink("/dev/zero", "output/zero")
open("/tmp/secret.txt", "w").write("outside output")
os.link("/tmp/secret.txt", "output/hard")
os.mkfifo("output/fifo")
sock = socket.socket(socket.AF_UNIX)
sock.bind("output/sock")
try:
    os.mknod("output/null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    mknod = "made"
except OSError as e:
    mknod = e.errno
try:
    os.link("/sandbox/harness/run.py", "output/harness")
    link = "made"
except OSError as e:
    link = e.errno
return [mknod, link]`, 'import os, socket, stat'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 400))
    t.not(reply.body.result[0], 'made', 'no device can be made')
    t.not(reply.body.result[1], 'made', 'no file outside /tmp can be linked in')
    t.notOk('files' in reply.body, 'nothing was read')
    t.same(leftOut(reply), {
      environ: 'a symbolic link (not followed)',
      'tmp-dir': 'a symbolic link (not followed)',
      up: 'a symbolic link (not followed)',
      zero: 'a symbolic link (not followed)',
      hard: 'a hard link (the file has 2 names)',
      fifo: 'a FIFO',
      sock: 'a socket'
    })
    t.notOk(JSON.stringify(reply.body).includes(SERVER_SECRET), 'no environment in the reply')
    t.notOk(JSON.stringify(reply.body).includes('outside output'), 'no file outside output/ in the reply')
  })

  await t.test('deny: names that cannot travel, unreadable entries and depth are named, not read', async t => {
    const reply = await post(target, script(`
open(b"output/\\xff.bin", "w").close()
open("output/new\\nline", "w").close()
open("output/locked", "w").write("x")
os.chmod("output/locked", 0)
os.makedirs("output/closed/inner")
open("output/closed/inner/f", "w").close()
os.chmod("output/closed", 0)
deep = "output/" + "/".join(["d"] * 40)
os.makedirs(deep)
open(deep + "/f", "w").close()
return 1`, 'import os'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 400))
    const out = leftOut(reply)
    t.match(out, {
      '\\xff.bin': 'its name is not valid UTF-8',
      'new\\nline': 'its name holds control characters',
      locked: /^not readable \(Permission denied\)$/,
      closed: /^the directory is not readable/
    })
    t.match(Object.entries(out).find(([path]) => path.startsWith('d/d/')), [/^(d\/){32}d$/, /longer than 1024 bytes or 32 levels/], 'the 33rd level is left out, not descended')
    t.notOk('files' in reply.body)
  })

  await t.test('deny: output/ itself replaced by a link is not followed', async t => {
    const reply = await post(target, script(`
try:
    os.rmdir("output")
except OSError as e:
    return ["kept", e.errno]
os.symlink("/proc/self", "output")
return ["replaced"]`, 'import os'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 400))
    t.notOk('files' in reply.body)
    if (reply.body.result[0] === 'replaced') t.match(leftOut(reply), { '.': /^output\/ is not a directory that can be read/ }, 'cold: the link is named, not read')
    else t.pass('warm: output/ belongs to the jail\'s zygote; the run cannot remove it')
  })

  await t.test('deny: a sparse 1 TB file cannot be made; a sparse file at the size limit is refused unread', async t => {
    const tmpBytes = limit('LIMIT_TMP_MB') * 1024 * 1024
    const started = performance.now()
    const reply = await post(target, script(`
with open("output/sparse", "wb") as f:
    try:
        f.truncate(1 << 40)
    except OSError as e:
        errno = e.errno
    f.truncate(${tmpBytes})
return errno`))
    t.match(reply.body, { code: 'OUTPUT_TOO_LARGE', outputFiles: 1, outputBytes: tmpBytes }, JSON.stringify(reply.body).slice(0, 300))
    t.ok(performance.now() - started < 3000, 'promptly: the file is never read')
  })

  await t.test('deny: 100,000 tiny files end at the inode limit, then OUTPUT_TOO_LARGE; the next run is prompt', async t => {
    const reply = await post(target, script(`
made = 0
try:
    for made in range(100000):
        open(f"output/{made}", "w").close()
except OSError:
    pass
return made`))
    t.match(reply.body, { code: 'OUTPUT_TOO_LARGE', message: /more than 100 files/ })
    const next = await post(target, 'import os\ndef main():\n    return os.listdir("output")\n')
    t.same(next.body.result, [])
  })

  await t.test('deny: a process left behind that keeps writing or swapping files cannot stall or swell the reply', async t => {
    const started = performance.now()
    const reply = await post(target, script(`
open("output/live.log", "w").close()
if os.fork() == 0:
    f = open("output/live.log", "a", buffering=1)
    while True:
        f.write("x" * 4096)
        time.sleep(0.001)
        try:
            os.mkfifo("output/swap.tmp")
            os.replace("output/swap.tmp", "output/swap")
        except OSError:
            pass
        with open("output/swap.tmp", "w") as g:
            g.write("file")
        os.replace("output/swap.tmp", "output/swap")
time.sleep(0.2)
return "main returned"`, 'import os, time'))
    t.equal(reply.status, 200, JSON.stringify(reply.body).slice(0, 300))
    t.equal(reply.body.result, 'main returned')
    t.ok(performance.now() - started < 3000, 'promptly')
    const live = filesOf(reply).get('live.log')
    t.ok(live !== undefined && /^x*$/.test(live.content) && live.size < 8 * 1024 * 1024, `what was there when it was opened, no more (${String(live?.size)} bytes)`)
    const swap = filesOf(reply).get('swap') ?? leftOut(reply).swap
    t.ok(swap !== undefined, 'the swapped entry is either read as a file or named')
  })
}
