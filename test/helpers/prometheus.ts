// Reading Prometheus text in tests.

/** The value of one series (`name{label="value",...}` exactly as printed), or undefined. */
export function seriesValue (text: string, series: string): number | undefined {
  const line = text.split('\n').find(l => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}
