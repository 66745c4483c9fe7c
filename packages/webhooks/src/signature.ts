import { createHmac, timingSafeEqual } from 'node:crypto'

/** Header names (HTTP header names are case-insensitive; these are how they are sent). */
export const WEBHOOK_ID_HEADER = 'Tidings-Webhook-Id'
export const WEBHOOK_TIMESTAMP_HEADER = 'Tidings-Timestamp'
export const WEBHOOK_SIGNATURE_HEADER = 'Tidings-Signature'
export const WEBHOOK_ATTEMPT_HEADER = 'Tidings-Webhook-Attempt'

/** A webhook secret: a string (its UTF-8 bytes) or raw bytes, at least 16 bytes long. */
export type WebhookSecret = string | Uint8Array

/** Fewer bytes than this is refused as a secret: HMAC is only as strong as its key. */
export const MIN_SECRET_BYTES = 16

/** One or several secrets, as a list (during a rotation: the new one and the old one). */
export function secretList(secrets: WebhookSecret | readonly WebhookSecret[], what = 'secret'): WebhookSecret[] {
  const list: WebhookSecret[] = typeof secrets === 'string' || secrets instanceof Uint8Array ? [secrets] : [...secrets]
  if (list.length === 0) throw new TypeError(`${what}: at least one secret is needed`)
  for (const s of list) {
    const bytes = typeof s === 'string' ? Buffer.byteLength(s, 'utf8') : s instanceof Uint8Array ? s.byteLength : -1
    if (bytes < 0) throw new TypeError(`${what}: a secret is a string or a Uint8Array`)
    if (bytes < MIN_SECRET_BYTES) throw new TypeError(`${what}: a secret of ${bytes} bytes is too short (at least ${MIN_SECRET_BYTES}; 32 random bytes are recommended)`)
  }
  return list
}

/** `hex(HMAC-SHA256(secret, `${timestamp}.${body}`))`: the v1 signature of one request. */
export function computeSignature(secret: WebhookSecret, timestamp: number | string, body: string | Uint8Array): string {
  const hmac = createHmac('sha256', secret)
  hmac.update(`${timestamp}.`, 'utf8')
  if (typeof body === 'string') hmac.update(body, 'utf8')
  else hmac.update(body)
  return hmac.digest('hex')
}

/**
 * The `Tidings-Signature` header: `v1=<hex>` for each secret, comma-separated. Signing with the
 * new and the old secret during a rotation lets receivers that still hold either one verify.
 */
export function signatureHeader(secrets: readonly WebhookSecret[], timestamp: number, body: string | Uint8Array): string {
  return secrets.map((s) => `v1=${computeSignature(s, timestamp, body)}`).join(',')
}

export type WebhookVerificationReason =
  /** A header is missing, the timestamp is not an integer, the body is not the JSON payload. */
  | 'malformed'
  /** No v1 signature in the header matches any of the receiver's secrets. */
  | 'bad-signature'
  /** The timestamp is further from now than the tolerance (a replay, or a clock far off). */
  | 'stale-timestamp'

/** Why a webhook request was refused; `reason` is for code, `message` for people. */
export class WebhookVerificationError extends Error {
  override readonly name = 'WebhookVerificationError'
  constructor(
    readonly reason: WebhookVerificationReason,
    message: string,
  ) {
    super(message)
  }
}

/** One event in a webhook payload. Fields beyond the common ones depend on `name` (see docs/webhooks.md). */
export interface WebhookEvent {
  /** Unique event id, the same on every retry: deduplicate on it. */
  readonly id: string
  readonly name: string
  readonly channel: string
  /** The hub node that saw it (`hub.nodeId`). */
  readonly node: string
  /** When the node saw it (ms since the epoch). */
  readonly time_ms: number
  readonly [field: string]: unknown
}

/** The JSON body of a webhook request. */
export interface WebhookPayload {
  /** The batch id (also the `Tidings-Webhook-Id` header), the same on every retry of the batch. */
  readonly id: string
  /** When the batch was made (ms since the epoch). */
  readonly time_ms: number
  readonly events: WebhookEvent[]
}

/** Request headers as Node (`req.headers`), Express, or fetch's `Headers` give them. */
export type WebhookHeaders = { get(name: string): string | null } | Readonly<Record<string, string | readonly string[] | undefined>>

export interface VerifyWebhookOptions {
  /** The raw request body, exactly as received (not re-serialized JSON). */
  readonly body: string | Uint8Array
  readonly headers: WebhookHeaders
  /** The endpoint's secret, or several (during a rotation): a request signed with any of them passes. */
  readonly secrets: WebhookSecret | readonly WebhookSecret[]
  /** How far (either way) the timestamp may be from now. Default 300. */
  readonly toleranceSeconds?: number
  /** The current time in ms (default `Date.now()`). */
  readonly now?: number
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof (headers as { get?: unknown }).get === 'function') return (headers as { get(n: string): string | null }).get(name) ?? undefined
  const bag = headers as Readonly<Record<string, string | readonly string[] | undefined>>
  const lower = name.toLowerCase()
  let value = bag[lower]
  if (value === undefined) {
    for (const key of Object.keys(bag)) {
      if (key.toLowerCase() === lower) {
        value = bag[key]
        break
      }
    }
  }
  if (value === undefined) return undefined
  return typeof value === 'string' ? value : value.join(',')
}

const HEX_SIGNATURE = /^[0-9a-f]{64}$/

/**
 * Check a webhook request and answer its payload: the signature (HMAC-SHA256 over
 * `${timestamp}.${body}`, compared in constant time) against each secret, the timestamp within
 * `toleranceSeconds` of now, and the body's shape. Throws a `WebhookVerificationError` whose
 * `reason` is `malformed`, `bad-signature` or `stale-timestamp`.
 */
export function verifyWebhook(options: VerifyWebhookOptions): WebhookPayload {
  const secrets = secretList(options.secrets, 'verifyWebhook')
  const tolerance = options.toleranceSeconds ?? 300
  const now = options.now ?? Date.now()
  const id = header(options.headers, WEBHOOK_ID_HEADER)
  const timestamp = header(options.headers, WEBHOOK_TIMESTAMP_HEADER)
  const signature = header(options.headers, WEBHOOK_SIGNATURE_HEADER)
  if (id === undefined || timestamp === undefined || signature === undefined) {
    const missing = [id === undefined && WEBHOOK_ID_HEADER, timestamp === undefined && WEBHOOK_TIMESTAMP_HEADER, signature === undefined && WEBHOOK_SIGNATURE_HEADER].filter(Boolean).join(', ')
    throw new WebhookVerificationError('malformed', `missing header ${missing}`)
  }
  if (!/^\d{1,12}$/.test(timestamp.trim())) throw new WebhookVerificationError('malformed', `${WEBHOOK_TIMESTAMP_HEADER} is not a Unix time in seconds`)
  const ts = timestamp.trim()
  if (typeof options.body !== 'string' && !(options.body instanceof Uint8Array)) {
    throw new WebhookVerificationError('malformed', 'the body must be the raw request body (a string or a Buffer), not parsed JSON')
  }

  const candidates = signature
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part.startsWith('v1='))
    .map((part) => part.slice(3).toLowerCase())
    .filter((hex) => HEX_SIGNATURE.test(hex))
    .map((hex) => Buffer.from(hex, 'utf8'))
  if (candidates.length === 0) throw new WebhookVerificationError('malformed', `${WEBHOOK_SIGNATURE_HEADER} holds no v1 signature`)
  let valid = false
  for (const secret of secrets) {
    const expected = Buffer.from(computeSignature(secret, ts, options.body), 'utf8')
    // Every candidate is compared (same length by construction), in constant time.
    for (const candidate of candidates) if (timingSafeEqual(expected, candidate)) valid = true
  }
  if (!valid) throw new WebhookVerificationError('bad-signature', 'no signature matches: wrong secret, or the body or timestamp was changed')

  const age = Math.floor(now / 1000) - Number(ts)
  if (Math.abs(age) > tolerance) {
    throw new WebhookVerificationError('stale-timestamp', `timestamp is ${Math.abs(age)} s ${age >= 0 ? 'old' : 'in the future'}, beyond the tolerance of ${tolerance} s`)
  }

  let payload: unknown
  try {
    payload = JSON.parse(typeof options.body === 'string' ? options.body : Buffer.from(options.body.buffer, options.body.byteOffset, options.body.byteLength).toString('utf8'))
  } catch {
    throw new WebhookVerificationError('malformed', 'the body is not JSON')
  }
  const p = payload as Partial<WebhookPayload> | null
  if (typeof p !== 'object' || p === null || typeof p.id !== 'string' || typeof p.time_ms !== 'number' || !Array.isArray(p.events)) {
    throw new WebhookVerificationError('malformed', 'the body is not a webhook payload ({ id, time_ms, events })')
  }
  if (p.id !== id.trim()) throw new WebhookVerificationError('malformed', `${WEBHOOK_ID_HEADER} does not match the payload's id`)
  for (const e of p.events) {
    if (typeof e !== 'object' || e === null || typeof (e as WebhookEvent).id !== 'string' || typeof (e as WebhookEvent).name !== 'string') {
      throw new WebhookVerificationError('malformed', 'an event has no id or name')
    }
  }
  return p as WebhookPayload
}
