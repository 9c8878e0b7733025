/** Bytes in a mebibyte: every limit given in MiB becomes bytes with this. */
export const MiB = 1024 * 1024
