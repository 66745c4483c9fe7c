/**
 * The long-poll suites' client: keeps the cursor, confirms with every poll.
 */
import type { Hub, HubOptions } from '@tidings/core'
import { expect } from 'vitest'
import { json, serveTransport } from '../../http-kit/test/support.js'
import { createLongPollTransport, type LongPollTransport, type LongPollTransportOptions } from '../src/index.js'

// ------------------------------------------------------------------ harness

export function setup(options: LongPollTransportOptions = {}, hubOptions: HubOptions = {}): Promise<{ hub: Hub; transport: LongPollTransport; base: string }> {
  return serveTransport((hub) => createLongPollTransport(hub, options), hubOptions)
}

export type Frame = Record<string, any>
export interface PollBody {
  frames: Frame[]
  cursor: number
  upgrade: string
  close?: { code: number; reason: string }
}

/** A long-poll client as the protocol describes it: keeps the cursor, confirms with every poll. */
export class Client {
  cursor: number
  readonly received: Frame[] = []
  connectionId: string

  constructor(
    readonly base: string,
    readonly session: string,
    readonly secret: string,
    opened: PollBody,
  ) {
    this.cursor = opened.cursor
    this.received.push(...opened.frames)
    this.connectionId = opened.frames[0]!.connectionId
  }

  url(): string {
    return `${this.base}/realtime/poll/${this.session}`
  }

  fetchPoll(cursor = this.cursor, secret = this.secret, signal?: AbortSignal): Promise<Response> {
    return fetch(`${this.url()}?cursor=${cursor}`, { headers: { 'x-tidings-secret': secret }, signal: signal ?? null })
  }

  /** One poll; takes the frames and moves the cursor. */
  async poll(cursor = this.cursor): Promise<PollBody> {
    const res = await this.fetchPoll(cursor)
    expect(res.status).toBe(200)
    const body = (await json(res)) as PollBody
    this.received.push(...body.frames)
    this.cursor = body.cursor
    return body
  }

  /** Poll until a frame matches. */
  async frame(type: string, match: (f: Frame) => boolean = () => true): Promise<Frame> {
    const deadline = Date.now() + 3000
    for (;;) {
      const f = this.received.find((x) => x.type === type && match(x))
      if (f) return f
      if (Date.now() > deadline) throw new Error(`no ${type}; got ${JSON.stringify(this.received)}`)
      await this.poll()
    }
  }

  post(body: unknown, o: { secret?: string; raw?: string; session?: string } = {}): Promise<Response> {
    return fetch(`${this.base}/realtime/poll/${o.session ?? this.session}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tidings-secret': o.secret ?? this.secret },
      body: o.raw ?? JSON.stringify(body),
    })
  }
}

export async function openRaw(base: string, token?: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${base}/realtime/poll${token ? `?token=${token}` : ''}`, { method: 'POST', headers })
}

export async function connect(base: string, token?: string, headers: Record<string, string> = {}): Promise<Client> {
  const res = await openRaw(base, token, headers)
  expect(res.status).toBe(200)
  const body = (await json(res)) as PollBody & { session: string; secret: string }
  return new Client(base, body.session, body.secret, body)
}

