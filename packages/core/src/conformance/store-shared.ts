import type { Retention, StoredMessage } from '../ports/store.js'

/** The suite's start of time (never the wall clock). */
export const T0 = Date.UTC(2026, 0, 1)
/** A retention that keeps everything a test appends. */
export const KEEP: Retention = { maxCount: 1_000, maxAgeMs: 24 * 3_600_000 }
/** What an append takes. */
export type Input = Omit<StoredMessage, 'offset' | 'channel'>
