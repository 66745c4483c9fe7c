import type { Revises, StoredMessage } from '@tidings/core'
import { sql } from 'kysely'

/**
 * A message row as the store's queries select it (`MESSAGE_COLUMNS`). `revises`, `version` and
 * `deleted_at` may be left out of a select (the message then reads as appended).
 */
export interface MessageRow {
  seq: number | string
  id: string
  event: string
  data: unknown
  data_json: string | null
  sender: string | null
  ts: number | string
  exclude: string | null
  revises?: string | null | undefined
  version?: unknown
  deleted_at?: unknown
}

/** The columns of a `MessageRow`, for `SELECT ${MESSAGE_COLUMNS} FROM messages`. */
export const MESSAGE_COLUMNS = sql.raw('seq, id, event, data, data_json, sender, ts, exclude, revises, version, deleted_at')
/** The same, of a table aliased `m`. */
export const M_MESSAGE_COLUMNS = sql.raw('m.seq, m.id, m.event, m.data, m.data_json, m.sender, m.ts, m.exclude, m.revises, m.version, m.deleted_at')

/**
 * Whether jsonb refuses this JSON text: a string holding U+0000, or a lone surrogate (which
 * `JSON.stringify` writes as a `\ud800`–`\udfff` escape). Such data is kept as text in `data_json`.
 */
export const jsonbRefuses = (json: string): boolean => /\\u(?:0000|d[89a-f])/.test(json)

/** A bigint/numeric column as a number (null: 0). */
export const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v))

/** `StoredMessage.revises` as the `revises` column keeps it (JSON text, as appended, like `exclude`), or null. */
export function revisesColumn(revises: Revises | undefined): string | null {
  return revises === undefined || revises === null ? null : JSON.stringify(revises)
}

/**
 * A row as the port's `StoredMessage`: `revises` when set, `version` only once revised (> 1) and
 * `deleted: true` once deleted, so a message never revised reads exactly as appended.
 */
export function toMessage(channel: string, row: MessageRow): StoredMessage {
  const message: { -readonly [K in keyof StoredMessage]: StoredMessage[K] } = {
    offset: Number(row.seq),
    id: row.id,
    channel,
    event: row.event,
    data: row.data_json !== null ? JSON.parse(row.data_json) : row.data,
    timestamp: Number(row.ts),
  }
  if (row.sender !== null) message.sender = row.sender
  if (row.exclude !== null) message.exclude = JSON.parse(row.exclude)
  if (row.revises !== null && row.revises !== undefined) message.revises = JSON.parse(row.revises)
  const version = num(row.version)
  if (version > 1) message.version = version
  if (row.deleted_at !== null && row.deleted_at !== undefined) message.deleted = true
  return message
}
