// What JSON.parse was asked to parse while some work ran: the tests that hold a path to "a scan,
// never a parse" of large texts look at the largest one.

/** Runs `work` with JSON.parse watched (restored after, whatever happens): its value, and the
 *  length of the largest text parsed meanwhile (0: none). */
export async function largestParse<T> (work: () => Promise<T>): Promise<{ value: T, largest: number }> {
  const lengths: number[] = []
  const parse = JSON.parse
  JSON.parse = ((text: string, reviver?: Parameters<typeof parse>[1]) => {
    lengths.push(text.length)
    return parse(text, reviver)
  }) as typeof JSON.parse
  try {
    const value = await work()
    return { value, largest: Math.max(0, ...lengths) }
  } finally {
    JSON.parse = parse
  }
}
