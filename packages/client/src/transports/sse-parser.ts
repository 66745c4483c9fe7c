export interface SseEvent {
  /** The `event:` field, `message` when absent. */
  readonly event: string
  readonly data: string
  /** The last event id seen on the stream so far (`id:` fields), '' before any. */
  readonly lastEventId: string
}

/**
 * An incremental `text/event-stream` parser (the WHATWG algorithm): feed it decoded text in any
 * chunks; it calls `onEvent` per dispatched event and `onRetry` for `retry:` lines. Comments
 * (`: ping`) are skipped.
 */
export class SseParser {
  private buffer = ''
  private data: string[] = []
  private event = ''
  lastEventId = ''

  constructor(
    private readonly onEvent: (event: SseEvent) => void,
    private readonly onRetry: (ms: number) => void = () => {},
  ) {}

  push(chunk: string): void {
    this.buffer += chunk
    for (;;) {
      const cr = this.buffer.indexOf('\r')
      const lf = this.buffer.indexOf('\n')
      if (cr < 0 && lf < 0) return
      let end: number
      let next: number
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        // A CR at the very end may be the first half of CRLF: wait for the next chunk.
        if (cr === this.buffer.length - 1) return
        end = cr
        next = this.buffer[cr + 1] === '\n' ? cr + 2 : cr + 1
      } else {
        end = lf
        next = lf + 1
      }
      const line = this.buffer.slice(0, end)
      this.buffer = this.buffer.slice(next)
      this.line(line)
    }
  }

  private line(line: string): void {
    if (line === '') return this.dispatch()
    if (line.startsWith(':')) return
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'event':
        this.event = value
        break
      case 'data':
        this.data.push(value)
        break
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.onRetry(Number(value))
        break
    }
  }

  private dispatch(): void {
    const data = this.data
    const event = this.event || 'message'
    this.data = []
    this.event = ''
    if (data.length === 0) return
    this.onEvent({ event, data: data.join('\n'), lastEventId: this.lastEventId })
  }
}
