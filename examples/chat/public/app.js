import { Realtime } from '/client.js'

const $ = (id) => document.getElementById(id)
const status = $('status')
let rt
let current // { name, channel }
const typingUsers = new Map() // userId -> timer

function setStatus(state) {
  status.dataset.state = state
  status.textContent = rt?.transport ? `${state} (${rt.transport})` : state
}

function addMessage(m, history = false) {
  const li = document.createElement('li')
  if (history) li.className = 'history'
  li.dataset.offset = m.offset ?? ''
  const who = document.createElement('span')
  who.className = 'who'
  who.textContent = m.sender ?? 'server'
  li.append(who, document.createTextNode(String(m.data?.text ?? '')))
  $('messages').append(li)
  li.scrollIntoView({ block: 'end' })
}

function renderPresence(users) {
  const ul = $('presence')
  ul.replaceChildren(
    ...users.map((u) => {
      const li = document.createElement('li')
      li.dataset.user = u.id
      li.dataset.state = u.state
      li.textContent = `${u.data?.name ?? u.id}${u.state !== 'online' ? ` (${u.state})` : ''}`
      return li
    }),
  )
}

function renderTyping() {
  const names = [...typingUsers.keys()]
  $('typing').textContent = names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`
}

async function enterRoom(room, name) {
  if (current) await current.channel.unsubscribe().catch(() => {})
  $('messages').replaceChildren()
  typingUsers.clear()
  renderTyping()
  $('room-title').textContent = `# ${room}`
  for (const li of $('rooms').children) li.classList.toggle('active', li.dataset.room === room)
  const channel = rt.channel(`presence:room-${room}`, { presence: { name } })
  channel.on('chat', (_data, m) => addMessage(m))
  channel.on('presence:join', () => refreshPresence(channel))
  channel.on('presence:leave', () => refreshPresence(channel))
  channel.on('presence:update', () => refreshPresence(channel))
  channel.on('typing', (t) => {
    clearTimeout(typingUsers.get(t.userId))
    if (t.active) typingUsers.set(t.userId, setTimeout(() => { typingUsers.delete(t.userId); renderTyping() }, 6000))
    else typingUsers.delete(t.userId)
    renderTyping()
  })
  current = { room, channel }
  await channel.subscribe()
  const history = await channel.history({ limit: 50 })
  for (const m of history.messages) if (m.event === 'chat') addMessage(m, true)
  await refreshPresence(channel)
}

async function refreshPresence(channel) {
  const p = await channel.getPresence()
  renderPresence(p.users)
}

$('login').addEventListener('submit', async (e) => {
  e.preventDefault()
  const name = $('name').value.trim()
  $('login').hidden = true
  $('app').hidden = false
  rt = new Realtime({ url: `${location.origin}/realtime`, auth: `demo:${name}` })
  rt.on('state', setStatus)
  rt.on('error', (err) => console.warn('realtime error', err))
  const rooms = await (await fetch('/rooms')).json()
  $('rooms').replaceChildren(
    ...rooms.map((room) => {
      const li = document.createElement('li')
      li.dataset.room = room
      li.textContent = `# ${room}`
      li.addEventListener('click', () => enterRoom(room, name))
      return li
    }),
  )
  await enterRoom(rooms[0], name)
})

let lastTyping = 0
$('input').addEventListener('input', () => {
  if (!current || Date.now() - lastTyping < 1000) return
  lastTyping = Date.now()
  current.channel.typing(true)
})

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault()
  const text = $('input').value.trim()
  if (!text || !current) return
  $('input').value = ''
  current.channel.typing(false)
  lastTyping = 0
  const published = await current.channel.send('chat', { text })
  addMessage({ sender: rt.userId ?? 'me', data: { text }, offset: published.offset })
})

document.addEventListener('visibilitychange', () => {
  if (current) current.channel.updatePresence({ name: $('name').value }, document.hidden ? 'away' : 'online').catch(() => {})
})
