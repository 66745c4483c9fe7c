/**
 * How the Redis message store writes a message into its stream entry, and reads it back with its
 * revision (kept beside the stream, see store-scripts.ts) overlaid.
 */
import type { Revises, Revision, StoredMessage } from '@tidings/core'

/**
 * A stream entry's `m` field, as JSON. `revises` is only written for a revision event, so other
 * messages are written (and measured) exactly as before it existed, and entries written without
 * it read back unchanged.
 */
type Body =
  | [id: string, event: string, data: unknown, sender: string | null, timestamp: number, exclude: StoredMessage['exclude'] | null]
  | [id: string, event: string, data: unknown, sender: string | null, timestamp: number, exclude: StoredMessage['exclude'] | null, revises: Revises]

/** What an idempotency key remembers of its message once the stream dropped it. */
type Slim = [id: string, event: string, sender: string | null, timestamp: number]

export function toBody(input: Omit<StoredMessage, 'offset' | 'channel'>): string {
  const body: Body = [input.id, input.event, input.data, input.sender ?? null, input.timestamp, input.exclude ?? null]
  const r = input.revises
  if (r !== undefined) body.push({ offset: r.offset, version: r.version, ...(r.deleted === true ? { deleted: true as const } : {}) } satisfies Revises)
  return JSON.stringify(body)
}

export function toSlim(input: Omit<StoredMessage, 'offset' | 'channel'>): string {
  return JSON.stringify([input.id, input.event, input.sender ?? null, input.timestamp] satisfies Slim)
}

export function fromBody(channel: string, offset: number, json: string): StoredMessage {
  const [id, event, data, sender, timestamp, exclude, revises] = JSON.parse(json) as Body
  const message: StoredMessage = { offset, id, channel, event, data, sender: sender ?? undefined, timestamp, exclude: exclude ?? undefined }
  return revises ? { ...message, revises } : message
}

export function fromSlim(channel: string, offset: number, json: string): StoredMessage {
  const [id, event, sender, timestamp] = JSON.parse(json) as Slim
  return { offset, id, channel, event, data: undefined, sender: sender ?? undefined, timestamp }
}

/** A revision as the revisions hash keeps it after the version: `J<data JSON>` or `D`. */
export function toRevision(revision: Revision): string {
  return revision.deleted === true ? 'D' : `J${JSON.stringify(revision.data ?? null) ?? 'null'}`
}

/** The message with its revision (`<version>|J<data JSON>` or `<version>|D`, null: never revised). */
export function overlay(message: StoredMessage, revision: string | null | undefined): StoredMessage {
  if (revision === null || revision === undefined) return message
  const bar = revision.indexOf('|')
  const version = Number(revision.slice(0, bar))
  if (revision.charAt(bar + 1) === 'D') return { ...message, data: null, version, deleted: true }
  return { ...message, data: JSON.parse(revision.slice(bar + 2)) as unknown, version }
}
