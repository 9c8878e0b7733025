// The rules for files in and out (src/files.ts) and how files travel to the harness.
import t from 'tap'
import { harnessRequest } from '../../src/backends/launch.js'
import { base64Bytes, clash, inputFiles, mediaTypeOf, pathProblem, sizeOf, type FilesInLimits } from '../../src/files.js'

const limits: FilesInLimits = { count: 3, fileBytes: 10, totalBytes: 15, tmpBytes: 4 * 4096, tmpFiles: 20 }

t.test('a path is a place in the working directory: deny/allow pairs', async t => {
  const denied: Array<[string, RegExp]> = [
    ['', /empty/],
    ['../x', /not normalised/],
    ['a/../b', /not normalised/],
    ['a/./b', /not normalised/],
    ['a//b', /not normalised/],
    ['a/', /not normalised/],
    ['/abs', /absolute/],
    ['a\u0000b', /control character/],
    ['a\rb', /control character/],
    ['a\u0085b', /control character/],
    ['a\u007fb', /control character/],
    ['ok\u202etxt.exe', /control character/],
    ['a\u2066b', /control character/],
    ['a\u200fb', /control character/],
    ['\udc00', /lone surrogate/],
    ['x'.repeat(256), /part longer than 255 bytes/],
    ['é'.repeat(128), /part longer than 255 bytes/],
    [`${'a/'.repeat(32)}b`, /more than 32 levels/],
    [`${'y'.repeat(200)}/`.repeat(6) + 'z', /longer than 1024 bytes/]
  ]
  for (const [path, reason] of denied) t.match(pathProblem(path), reason, JSON.stringify(path).slice(0, 30))
  const allowed = ['a', '.hidden', 'a/b/c.csv', 'données/é.txt', '..a', 'a..', 'a b', 'x'.repeat(255), `${'a/'.repeat(31)}b`, '😀', 'back\\slash']
  for (const path of allowed) t.equal(pathProblem(path), undefined, JSON.stringify(path).slice(0, 30))
})

t.test('input files are decoded and checked against every limit, naming the offending path', async t => {
  t.same(inputFiles([{ path: 'a.txt', content: 'hé' }, { path: 'b/c.bin', content: 'AAE=', encoding: 'base64' }], limits), [
    { path: 'a.txt', content: Buffer.from('hé') },
    { path: 'b/c.bin', content: Buffer.from([0, 1]) }
  ])
  t.same(inputFiles([], limits), [], 'none')
  const refusals: Array<[unknown[], RegExp]> = [
    [[{ path: 'a', content: '' }, { path: 'b', content: '' }, { path: 'c', content: '' }, { path: 'd', content: '' }], /^body\.files has 4 files; the limit is 3 \(LIMIT_FILES_IN\)$/],
    [[{ path: '../a', content: '' }], /^body\.files\[0\]\.path "\.\.\/a" is not normalised/],
    [[{ path: 'output/a', content: '' }], /is under output\//],
    [[{ path: 'output', content: '' }], /is under output\//],
    [[{ path: 'a', content: '' }, { path: 'a', content: '' }], /^body\.files\[1\]\.path "a" is given twice/],
    [[{ path: 'a/b', content: '' }, { path: 'a', content: '' }], /"a" is given twice \(or is also a directory/],
    [[{ path: 'a', content: '' }, { path: 'a/b/c', content: '' }], /"a\/b\/c" is under "a", which is a file/],
    [[{ path: 'a', content: 'x'.repeat(11) }], /^body\.files\[0\] \("a"\) is 11 bytes; the limit is 10 \(LIMIT_FILE_IN_BYTES\)$/],
    [[{ path: 'a', content: 'x'.repeat(8) }, { path: 'b', content: 'x'.repeat(8) }], /^body\.files hold more than 15 bytes \(LIMIT_FILES_IN_BYTES\); body\.files\[1\] \("b"\) goes over$/],
    [[{ path: 'a', content: 'a', encoding: 'base64' }], /^body\.files\[0\]\.content is not base64/],
    [[{ path: 'a', content: 'A\udc80B' }], /^body\.files\[0\]\.content is not valid Unicode \(a lone surrogate\); send bytes as base64$/]
  ]
  for (const [files, message] of refusals) t.throws(() => inputFiles(files as never, limits), { code: 'INVALID_REQUEST', statusCode: 400, message }, String(message))
  // tmpfs pages: five 1-byte files take five pages; the run's /tmp holds four.
  const pages = { ...limits, count: 10, tmpFiles: 1000 }
  t.throws(() => inputFiles(Array.from({ length: 5 }, (_, i) => ({ path: `f${i}`, content: 'x' })), pages), { message: /^body\.files take 20480 bytes of the run's \/tmp in whole pages; it holds 16384 \(LIMIT_TMP_MB\)$/ })
  t.equal(inputFiles(Array.from({ length: 4 }, (_, i) => ({ path: `f${i}`, content: 'x' })), pages).length, 4, 'allow: exactly the pages /tmp holds')
  // Inodes: files and their directories may take half of LIMIT_TMP_FILES (here 10).
  t.throws(() => inputFiles([{ path: 'a/b/c/d/e/f/g/h/i/j/k', content: '' }], { ...limits, tmpFiles: 20 }), { message: /^body\.files need 1 files and 10 directories; at most 10 together/ })
  t.equal(inputFiles([{ path: 'a/b/c/d/e/f/g/h/i/j', content: '' }], { ...limits, tmpFiles: 20 }).length, 1, 'allow: exactly half')
})

t.test('base64 is strict: padded, RFC 4648 alphabet, no line breaks', async t => {
  t.equal(base64Bytes(''), 0)
  t.equal(base64Bytes('YQ=='), 1)
  t.equal(base64Bytes('YWI='), 2)
  t.equal(base64Bytes('YWJj'), 3)
  for (const bad of ['YQ', 'YQ=', 'Y===', 'YQ==\n', 'YQ-_', 'YW Jj', '=YWJ']) t.equal(base64Bytes(bad), undefined, JSON.stringify(bad))
  t.equal(sizeOf('héllo', 'utf8'), 6)
  t.equal(sizeOf('YWJj', 'base64'), 3)
})

t.test('a media type comes from the extension alone', async t => {
  t.equal(mediaTypeOf('figures/1.png'), 'image/png')
  t.equal(mediaTypeOf('a/B.CSV'), 'text/csv')
  t.equal(mediaTypeOf('page.html'), 'text/html')
  t.equal(mediaTypeOf('image.svg'), 'image/svg+xml')
  t.equal(mediaTypeOf('noext'), 'application/octet-stream')
  t.equal(mediaTypeOf('.png'), 'application/octet-stream', 'a dot file has no extension')
  t.equal(mediaTypeOf('x.exe'), 'application/octet-stream')
})

t.test('the harness request carries the files as a fourth part: lengths, path, bytes; absent is -1', async t => {
  const withFiles = harnessRequest({ script: 's', files: [{ path: 'é', content: Buffer.from([0, 10, 255]) }, { path: 'b', content: Buffer.alloc(0) }] })
  const expected = Buffer.concat([Buffer.from('PYSANDBOX-REQUEST 1 -1 -1 14\ns2 3\né'), Buffer.from([0, 10, 255]), Buffer.from('1 0\nb')])
  t.same(withFiles, expected)
  t.equal(harnessRequest({ script: 's' }).toString(), 'PYSANDBOX-REQUEST 1 -1 -1 -1\ns')
  t.equal(harnessRequest({ script: 's', files: [] }).toString(), 'PYSANDBOX-REQUEST 1 -1 -1 0\ns', 'an empty list is sent as such')
})

t.test('a clash: a path that is also a directory of another', async t => {
  t.equal(clash(['a', 'a/b']), 'a')
  t.equal(clash(['x/y/z', 'x/y']), 'x/y')
  t.equal(clash(['figures/1.png/a.txt', 'figures/1.png']), 'figures/1.png')
  t.equal(clash(['a', 'b/a', 'ab/c']), undefined)
  t.equal(clash([]), undefined)
})
