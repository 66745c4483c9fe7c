/*
 * Word matching for stores that search a channel's history in process (the memory store, Redis):
 * a message matches when the strings of its data, nested ones too, hold every word of the query,
 * in any case. Words are runs of letters and digits of any script, so "Hello, world!" has the
 * words "hello" and "world". Databases use their own full-text search instead (PostgreSQL's
 * `plainto_tsquery` over the same words), which agrees on plain words.
 */

/** Strings looked at in one message's data at most (a bound on the walk). */
const MAX_STRINGS = 10_000

/** The words of a text, lower-cased. */
export function wordsOf(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []
}

/** The distinct words of a query (none: nothing matches). */
export function searchWords(query: string): string[] {
  return [...new Set(wordsOf(query))]
}

/**
 * Whether the strings in `data` hold every word of `wanted` (from `searchWords`). A cheap test
 * first (each word somewhere in the lower-cased strings), so most messages that do not match are
 * passed over without splitting their text into words.
 */
export function holdsWords(data: unknown, wanted: readonly string[]): boolean {
  if (wanted.length === 0) return false
  const texts: string[] = []
  const stack: unknown[] = [data]
  let walked = 0
  while (stack.length > 0 && walked++ < MAX_STRINGS) {
    const v = stack.pop()
    if (typeof v === 'string') texts.push(v.toLowerCase())
    else if (Array.isArray(v)) for (const item of v) stack.push(item)
    else if (v !== null && typeof v === 'object') for (const key in v) if (Object.hasOwn(v, key)) stack.push((v as Record<string, unknown>)[key])
  }
  for (const w of wanted) if (!texts.some((t) => t.includes(w))) return false
  const found = new Set<string>()
  for (const t of texts) for (const w of t.match(/[\p{L}\p{N}]+/gu) ?? []) found.add(w)
  return wanted.every((w) => found.has(w))
}
