import { createHub, createMemoryTransport, type Hub, type MemoryClient, type ServerFrame, silentLogger } from '@tidings/core'

/** One line per frame, as a chat client would render it. */
export function describe(frame: ServerFrame): string | undefined {
  switch (frame.type) {
    case 'message':
      return `[${frame.channel ?? 'direct'} #${frame.offset ?? '-'}] ${frame.sender ?? 'server'}: ${formatData(frame.data)}`
    case 'presence:join':
      return `[${frame.channel}] + ${frame.user.id} joined (${frame.user.state})`
    case 'presence:leave':
      return `[${frame.channel}] - ${frame.user.id} left`
    case 'presence:update':
      return `[${frame.channel}] ~ ${frame.user.id} is now ${frame.user.state}`
    case 'typing':
      return `[${frame.channel}] ${frame.userId} ${frame.active ? 'is typing…' : 'stopped typing'}`
    case 'subscribed': {
      const who = frame.presence ? ` — here: ${frame.presence.users.map((u) => u.id).join(', ') || 'nobody'}` : ''
      return `joined ${frame.channel}${who}`
    }
    case 'unsubscribed':
      return `left ${frame.channel}${frame.reason ? ` (${frame.reason})` : ''}`
    case 'error':
      return `error ${frame.code}: ${frame.message}`
    default:
      return undefined
  }
}

function formatData(data: unknown): string {
  if (data && typeof data === 'object' && 'text' in data) return String((data as { text: unknown }).text)
  return JSON.stringify(data)
}

export interface ChatScene {
  hub: Hub
  clients: Record<string, MemoryClient>
  /** What each user saw, in order. */
  transcript: Record<string, string[]>
}

/** The scripted conversation the demo prints; the example's test runs it too. */
export async function runChat(log: (line: string) => void = () => {}): Promise<ChatScene> {
  const hub = createHub({ logger: silentLogger, presence: { states: ['online', 'away', 'busy'] } })
  const transport = createMemoryTransport(hub)
  const pause = () => new Promise<void>((r) => setTimeout(r, 5))
  const transcript: Record<string, string[]> = {}
  const clients: Record<string, MemoryClient> = {}

  hub.rooms.create('private:room-design', { metadata: { title: 'Design review' }, members: { ada: 'owner', grace: 'member', linus: 'member' }, capacity: 10 })
  hub.on('room:member-joined', (e) => log(`  (hub) ${e.userId} entered ${e.room.channel}`))

  const join = async (name: string) => {
    const client = await transport.connect({ userId: name })
    clients[name] = client
    transcript[name] = []
    client.on('frame', (frame) => {
      const line = describe(frame)
      if (line) {
        transcript[name]!.push(line)
        log(`${name.padEnd(6)}| ${line}`)
      }
    })
    return client
  }

  log('— Ada and Grace open the app and join the lobby (a presence channel)')
  const ada = await join('ada')
  const grace = await join('grace')
  await ada.subscribe('presence:lobby', { presence: { name: 'Ada Lovelace' } })
  await grace.subscribe('presence:lobby', { presence: { name: 'Grace Hopper' } })
  await pause()

  log('— They chat on a public channel')
  await ada.subscribe('public:general')
  await grace.subscribe('public:general')
  ada.typing('presence:lobby', true)
  await pause()
  await ada.publish('public:general', 'chat', { text: 'Morning! Anyone up for the design review?' })
  ada.typing('presence:lobby', false)
  await grace.publish('public:general', 'chat', { text: 'Yes — see you in the room.' })
  await pause()

  log('— Both enter the private design room (members only)')
  await ada.subscribe('private:room-design')
  await grace.subscribe('private:room-design')
  await grace.publish('private:room-design', 'chat', { text: 'I pushed the new mock-ups.' })
  await ada.publish('private:room-design', 'chat', { text: 'Looking now.' })
  await pause()

  log('— Linus arrives late: he reads the room history, then joins')
  const linus = await join('linus')
  const history = await hub.channel('private:room-design').history({ limit: 10 })
  for (const m of history.messages) log(`linus | (history #${m.offset}) ${m.sender}: ${formatData(m.data)}`)
  transcript.linus!.push(...history.messages.map((m) => `(history) ${m.sender}: ${formatData(m.data)}`))
  await linus.subscribe('private:room-design')
  await linus.subscribe('presence:lobby', { presence: { name: 'Linus' } })
  await pause()

  log('— A stranger tries the private room and is refused')
  const eve = await join('eve')
  await eve.subscribe('private:room-design').catch(() => undefined)
  await pause()

  log('— Grace steps away, then the server announces a break')
  await grace.updatePresence('presence:lobby', { state: 'away' })
  await hub.broadcast({ event: 'announcement', data: { text: 'Coffee break in 5 minutes' }, to: { channels: ['public:general'] } })
  await pause()

  log('— Grace closes her laptop')
  grace.close()
  await pause()
  return { hub, clients, transcript }
}
