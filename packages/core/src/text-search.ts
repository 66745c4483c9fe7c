/*
 * Word matching for stores that search a channel's history in process (the memory store, Redis):
 * a message matches when the strings of its data, nested ones too, hold every word of the query,
 * in any case. Words are runs of letters and digits of any script, with the marks that combine
 * with them (accents, vowel signs: "cafe\u0301", "नमस्ते" are one word each, as PostgreSQL's
 * parser sees them), so "Hello, world!" has the words "hello" and "world". Text is compared in
 * Unicode normal form C, so a decomposed "café" and a composed one are the same word. Databases
 * use their own full-text search instead (PostgreSQL's `plainto_tsquery` over the query's words,
 * in normal form C), which agrees on plain words.
 */

/** A word: letters, digits and combining marks of any script. */
const WORD = /[\p{L}\p{N}\p{M}]+/gu

/** Strings looked at in one message's data at most (a bound on the walk). */
const MAX_STRINGS = 10_000

/** A text lower-cased, in normal form C (what words are compared in). */
function folded(text: string): string {
  return text.toLowerCase().normalize('NFC')
}

/** The words of a text, lower-cased, in normal form C. */
export function wordsOf(text: string): string[] {
  return folded(text).match(WORD) ?? []
}

/**
 * The distinct words of a query (none: nothing matches), lower-cased. With `{ fold: false }` they
 * keep their case (still in normal form C), for a database that folds them itself with the same
 * rules as the text it compares them with (PostgreSQL's `plainto_tsquery`).
 */
export function searchWords(query: string, o: { readonly fold?: boolean } = {}): string[] {
  return [...new Set(o.fold === false ? (query.normalize('NFC').match(WORD) ?? []) : wordsOf(query))]
}

/**
 * Whether the strings in `data` hold every word of `wanted` (from `searchWords`: lower-cased, in
 * normal form C). A cheap test first (each word somewhere in the folded strings), so most
 * messages that do not match are
 * passed over without splitting their text into words.
 */
export function holdsWords(data: unknown, wanted: readonly string[]): boolean {
  if (wanted.length === 0) return false
  const texts: string[] = []
  const stack: unknown[] = [data]
  let walked = 0
  while (stack.length > 0 && walked++ < MAX_STRINGS) {
    const v = stack.pop()
    if (typeof v === 'string') texts.push(folded(v))
    else if (Array.isArray(v)) for (const item of v) stack.push(item)
    else if (v !== null && typeof v === 'object') for (const key in v) if (Object.hasOwn(v, key)) stack.push((v as Record<string, unknown>)[key])
  }
  for (const w of wanted) if (!texts.some((t) => t.includes(w))) return false
  const found = new Set<string>()
  for (const t of texts) for (const w of t.match(WORD) ?? []) found.add(w)
  return wanted.every((w) => found.has(w))
}
