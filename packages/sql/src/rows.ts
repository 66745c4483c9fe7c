import type { StoredMessage } from '@tidings/core'

/** A message row as the store's queries select it (seq, id, event, data, data_json, sender, ts, exclude). */
export interface MessageRow {
  seq: number | string
  id: string
  event: string
  data: unknown
  data_json: string | null
  sender: string | null
  ts: number | string
  exclude: string | null
}

/** Data that jsonb refuses (a string holding U+0000) is kept as text in `data_json`. */
export const NUL = '\\u0000'

/** A bigint/numeric column as a number (null: 0). */
export const num = (v: unknown): number => (v === null || v === undefined ? 0 : Number(v))

/** A row as the port's `StoredMessage`. */
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
  return message
}
