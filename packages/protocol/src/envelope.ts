/**
 * The end-to-end encrypted envelope: what a client of an `encrypted` channel sends as a message's
 * data instead of the plaintext. The client SDK seals it with AES-256-GCM under a per-channel key
 * that the app's authorization endpoint hands out; the server, the store and the broker see only
 * this shape. Fields are base64url without padding.
 *
 *   e2e  format version (1)
 *   kid  which channel key sealed it (keys rotate; old ids stay readable)
 *   iv   the 12-byte nonce, fresh per message
 *   ct   ciphertext with the 16-byte GCM tag appended; the additional data is `<channel>\n<event>`
 *        so a ciphertext cannot be replayed into another channel or event
 */
export interface EncryptedEnvelope {
  readonly e2e: 1
  readonly kid: string
  readonly iv: string
  readonly ct: string
}

const B64URL = /^[A-Za-z0-9_-]+$/

/** Whether `data` has exactly the envelope's shape (version 1, a key id, a 12-byte iv, a ciphertext with its tag). */
export function isEncryptedEnvelope(data: unknown): data is EncryptedEnvelope {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return false
  const d = data as Record<string, unknown>
  const keys = Object.keys(d)
  if (keys.length !== 4) return false
  return (
    d['e2e'] === 1 &&
    typeof d['kid'] === 'string' && d['kid'].length > 0 && d['kid'].length <= 128 &&
    typeof d['iv'] === 'string' && d['iv'].length === 16 && B64URL.test(d['iv']) &&
    typeof d['ct'] === 'string' && d['ct'].length >= 22 && B64URL.test(d['ct'])
  )
}

/** The additional authenticated data of a message's envelope. */
export function envelopeAad(channel: string, event: string): string {
  return `${channel}\n${event}`
}
