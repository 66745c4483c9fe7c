import type { Line } from './requests.js'

/** Cumulative acknowledgments, batched: only the highest offset of each channel goes out, at most every `ackIntervalMs`. */
export class Acks {
  private readonly offsets = new Map<string, number>()
  private timer: ReturnType<typeof setTimeout> | undefined

  constructor(
    private readonly line: Line,
    private readonly options: { readonly ackIntervalMs?: number | undefined },
  ) {}

  add(channel: string, offset: number): void {
    const previous = this.offsets.get(channel)
    if (previous === undefined || offset > previous) this.offsets.set(channel, offset)
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined
        this.flush()
      }, this.options.ackIntervalMs ?? 50)
    }
  }

  /** Forget a channel's batched ack (its subscription ended). */
  delete(channel: string): void {
    this.offsets.delete(channel)
  }

  /** Send the batched acks (kept while disconnected: they go after the resubscribes). */
  flush(): void {
    const link = this.line.ready() ? this.line.current() : undefined
    if (!link) return
    for (const [channel, offset] of this.offsets) link.transport.send({ type: 'ack', channel, offset })
    this.offsets.clear()
  }
}
