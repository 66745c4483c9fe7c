/**
 * The numbered outbound log of an HTTP session (SSE, long-poll). Frames get `seq` 1, 2, 3, …
 * in the order they are pushed and stay until the client confirms them (`confirm`) or the
 * transport trims the oldest (`trim`). `bytes` counts what is kept, for backpressure.
 *
 * Items are whatever the transport writes (a shared, memoized string per frame), so a fan-out
 * adds one array slot per session and allocates nothing else.
 *
 * Used by the HTTP transports (`@tidings/sse`, `@tidings/long-poll`); pure, so it lives here.
 */
export class OutboundLog<T> {
  private items: (T | undefined)[] = []
  private sizes: number[] = []
  private head = 0
  /** `seq` of the newest frame pushed; 0 before the first. */
  last = 0
  /** Bytes of the frames kept. */
  bytes = 0

  /** Frames kept. */
  get size(): number {
    return this.items.length - this.head
  }

  /** `seq` of the oldest frame kept (`last + 1` when none is). */
  get first(): number {
    return this.last - this.size + 1
  }

  /** Append a frame; returns its `seq`. */
  push(item: T, bytes: number): number {
    this.items.push(item)
    this.sizes.push(bytes)
    this.bytes += bytes
    return ++this.last
  }

  /** Drop every frame up to and including `seq`. */
  confirm(seq: number): void {
    while (this.size > 0 && this.first <= seq) this.shift()
  }

  /** Drop the oldest frames while more than `maxBytes` are kept, but never `keepFrom` or later. */
  trim(maxBytes: number, keepFrom: number): void {
    while (this.bytes > maxBytes && this.size > 0 && this.first < keepFrom) this.shift()
  }

  /** Call `fn` for every frame after `seq`, oldest first. */
  forEachAfter(seq: number, fn: (item: T, seq: number) => void): void {
    const first = this.first
    for (let i = this.head + Math.max(0, seq + 1 - first); i < this.items.length; i++) fn(this.items[i] as T, first + i - this.head)
  }

  /** Bytes of the frames after `seq`. */
  bytesAfter(seq: number): number {
    let n = 0
    for (let i = this.head + Math.max(0, seq + 1 - this.first); i < this.items.length; i++) n += this.sizes[i]!
    return n
  }

  clear(): void {
    this.items = []
    this.sizes = []
    this.head = 0
    this.bytes = 0
  }

  private shift(): void {
    this.bytes -= this.sizes[this.head]!
    this.items[this.head] = undefined
    this.head++
    if (this.head === this.items.length) {
      this.items = []
      this.sizes = []
      this.head = 0
    } else if (this.head >= 64 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.sizes = this.sizes.slice(this.head)
      this.head = 0
    }
  }
}
