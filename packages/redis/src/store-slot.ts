/**
 * Redis Cluster key slots, for the message store's keys: every key of one channel carries the
 * channel's hash tag, and each slot has one small identity key (the store's identity in that
 * slot) whose hash tag lands in the same slot, so one Lua script can touch both.
 *
 * CRC16/XMODEM as Redis Cluster computes it (`CLUSTER KEYSLOT`); the cluster tests check it
 * against the server.
 */

const TABLE = (() => {
  const t = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i << 8
    for (let b = 0; b < 8; b++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff
    t[i] = c
  }
  return t
})()

const encoder = new TextEncoder()

/** The slot of a hash tag (the text between the braces), 0..16383. */
export function tagSlot(tag: string): number {
  const bytes = encoder.encode(tag)
  let crc = 0
  for (const byte of bytes) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ byte) & 0xff]!
  return crc & 16383
}

let tags: string[] | undefined

/** A short hash tag that lands in `slot` (the same one every time). */
export function slotTag(slot: number): string {
  if (!tags) {
    const out: Array<string | undefined> = new Array(16384)
    let left = 16384
    for (let i = 0; left > 0; i++) {
      const tag = i.toString(36)
      const s = tagSlot(tag)
      if (out[s] === undefined) {
        out[s] = tag
        left--
      }
    }
    tags = out as string[]
  }
  return tags[slot]!
}
