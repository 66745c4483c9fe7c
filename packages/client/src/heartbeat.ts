import type { Link } from './link.js'

/**
 * Pings on the connection in use: a `ping` every `heartbeatIntervalMs`; one unanswered within
 * `heartbeatTimeoutMs` closes the link and reports it dead.
 */
export class Heartbeat {
  private timer: ReturnType<typeof setTimeout> | undefined
  private pingId: number | undefined

  constructor(
    private readonly options: { readonly heartbeatIntervalMs?: number | undefined; readonly heartbeatTimeoutMs?: number | undefined },
    private readonly current: () => Link | undefined,
    private readonly id: () => number,
    private readonly dead: () => void,
  ) {}

  /** (Re)start on the current link. */
  start(): void {
    clearTimeout(this.timer)
    this.pingId = undefined
    const interval = this.options.heartbeatIntervalMs ?? 25_000
    if (interval <= 0) return
    const link = this.current()
    this.timer = setTimeout(() => {
      if (this.current() !== link || !link) return
      const id = (this.pingId = this.id())
      link.transport.send({ type: 'ping', id })
      this.timer = setTimeout(() => {
        if (this.current() !== link) return
        if (this.pingId !== id) return this.start()
        link.transport.close(1000, 'heartbeat timeout')
        this.dead()
      }, this.options.heartbeatTimeoutMs ?? 10_000)
    }, interval)
  }

  stop(): void {
    clearTimeout(this.timer)
    this.pingId = undefined
  }

  /** A `pong`: true when it answers the heartbeat's ping (not a request). */
  pong(id: string | number | undefined): boolean {
    if (id === undefined || id !== this.pingId) return false
    this.pingId = undefined
    return true
  }
}
