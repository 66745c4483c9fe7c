import { Realtime } from '/client.js'

const $ = (id) => document.getElementById(id)
const NAME = /^[\p{L}\p{N}][\p{L}\p{N} ._'-]{0,31}$/u
const TICKS = { sending: '·', sent: '✓', delivered: '✓✓', read: '✓✓' }
const RANK = { sending: 0, sent: 1, delivered: 2, read: 3 }
const params = new URLSearchParams(location.search)

let rt
let me // the user id (= the name)
let active // the room on screen
/** name → { channel, messages: Map<key, msg>, unread, members: Map, typing: Map, loaded, receipts: Map<offset, status> } */
const rooms = new Map()

// ---------------------------------------------------------------- sign-in

/** A fresh token for this name from the app server (the auth function of the client). */
async function login(name) {
  const res = await fetch('/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name }) })
  const body = await res.json().catch(() => ({}))
  if (!res.ok) throw new Error(body.message ?? `sign-in failed (HTTP ${res.status})`)
  return body.token
}

function loginError(message) {
  $('login-error').textContent = message
  $('login-error').hidden = !message
  $('name').setAttribute('aria-invalid', message ? 'true' : 'false')
}

$('name').addEventListener('input', () => loginError(''))

$('login').addEventListener('submit', async (e) => {
  e.preventDefault()
  const name = $('name').value.trim().replace(/\s+/g, ' ')
  if (!name) return loginError('Please enter a name.')
  if (!NAME.test(name)) return loginError('Use up to 32 letters, digits, spaces or . _ \' - (starting with a letter or digit).')
  $('join').disabled = true
  try {
    await login(name) // checks the name before connecting; the client asks for its own tokens
  } catch (err) {
    $('join').disabled = false
    return loginError(err.message)
  }
  start(name)
})

// ---------------------------------------------------------------- connection

function start(name) {
  me = name
  $('login').hidden = true
  $('app').hidden = false
  $('me').hidden = false
  $('me').textContent = name
  const transport = params.get('transport')
  rt = new Realtime({
    url: `${location.origin}/realtime`,
    auth: () => login(name), // called on every connect and when the credentials need refreshing
    ...(transport ? { transports: [transport] } : {}),
  })
  rt.on('state', (state) => {
    $('status').dataset.state = state
    $('status').textContent = state === 'connected' ? `connected · ${rt.transport}` : state
  })
  rt.on('error', (err) => {
    if (err.code === 'RT_006') return // rate limited: the client waits and retries by itself
    toast(err.message)
  })
  fetch('/rooms')
    .then((r) => r.json())
    .then((names) => {
      for (const room of names) joinRoom(room)
      renderRooms()
      show(names[0])
    })
}

/** Every room is joined once, with its listeners added once: switching rooms only changes the view. */
function joinRoom(name) {
  const channel = rt.channel(`presence:room-${name}`, { presence: { name: me } })
  const room = { name, channel, messages: new Map(), unread: 0, members: new Map(), typing: new Map(), loaded: false, receipts: new Map() }
  rooms.set(name, room)
  channel.on('chat', (_data, m) => addMessage(room, m, false))
  channel.on('subscribed', (frame) => {
    room.members = new Map((frame.presence?.users ?? []).map((u) => [u.id, u]))
    if (room === active) renderPresence()
    if (!room.loaded) loadHistory(room)
  })
  channel.on('gap', () => loadHistory(room))
  channel.on('presence:join', (u) => memberChanged(room, u, true))
  channel.on('presence:update', (u) => memberChanged(room, u, true))
  channel.on('presence:leave', (u) => memberChanged(room, u, false))
  channel.on('typing', ({ userId, active: on }) => {
    clearTimeout(room.typing.get(userId))
    if (on) room.typing.set(userId, setTimeout(() => (room.typing.delete(userId), renderTyping()), 6000))
    else room.typing.delete(userId)
    if (room === active) renderTyping()
  })
  channel.on('receipt', (r) => {
    for (const offset of r.offsets) {
      const msg = room.messages.get(offset)
      if (msg) upgrade(msg, r.status)
      else if (RANK[r.status] > RANK[room.receipts.get(offset) ?? 'sent']) room.receipts.set(offset, r.status)
    }
    if (room === active) renderMessages()
  })
  channel.subscribe().catch((err) => toast(`#${name}: ${err.message}`))
}

async function loadHistory(room) {
  room.loaded = true
  try {
    const page = await room.channel.history({ limit: 50 })
    for (const m of page.messages) if (m.event === 'chat') addMessage(room, m, true)
  } catch (err) {
    room.loaded = false
    toast(`could not load #${room.name}: ${err.message}`)
  }
}

function memberChanged(room, user, present) {
  if (present) room.members.set(user.id, user)
  else room.members.delete(user.id)
  if (room === active) renderPresence()
}

// ---------------------------------------------------------------- messages

function addMessage(room, m, fromHistory) {
  const key = m.offset ?? m.id
  if (room.messages.has(key)) return // history and live delivery may overlap: each message once
  const mine = m.sender === me
  const msg = { key, offset: m.offset, sender: m.sender, text: String(m.data?.text ?? ''), at: new Date(m.timestamp ?? Date.now()), mine, status: mine ? 'sent' : undefined }
  if (mine && m.offset !== undefined && room.receipts.has(m.offset)) upgrade(msg, room.receipts.get(m.offset))
  room.messages.set(key, msg)
  if (!mine && !fromHistory) {
    if (room === active && !document.hidden) markRead(room, [msg])
    else room.unread++
  }
  if (room === active) renderMessages()
  renderRooms()
}

function upgrade(msg, status) {
  if (RANK[status] > RANK[msg.status ?? 'sent']) msg.status = status
}

/** Tell the senders their messages were read (read receipts). */
function markRead(room, msgs) {
  const offsets = msgs.filter((m) => !m.mine && m.offset !== undefined && !m.read).map((m) => ((m.read = true), m.offset))
  if (offsets.length > 0) room.channel.read(offsets)
}

let lastTyping = 0
$('input').addEventListener('input', () => {
  if (!active || !$('input').value || Date.now() - lastTyping < 2000) return
  lastTyping = Date.now()
  active.channel.typing(true)
})

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault()
  const text = $('input').value.trim()
  if (!text || !active) return
  const room = active
  $('input').value = ''
  if (lastTyping) room.channel.typing(false)
  lastTyping = 0
  const local = { key: `local-${Date.now()}-${Math.random()}`, sender: me, text, at: new Date(), mine: true, status: 'sending' }
  room.messages.set(local.key, local)
  renderMessages()
  try {
    const { offset } = await room.channel.send('chat', { text })
    room.messages.delete(local.key)
    Object.assign(local, { key: offset, offset, status: 'sent' })
    if (room.receipts.has(offset)) upgrade(local, room.receipts.get(offset))
    room.messages.set(offset, local)
  } catch (err) {
    local.status = 'failed'
    toast(`not sent: ${err.message}`)
  }
  if (room === active) renderMessages()
})

document.addEventListener('visibilitychange', () => {
  if (!rt) return
  if (!document.hidden && active) {
    active.unread = 0
    markRead(active, [...active.messages.values()])
    renderRooms()
  }
  for (const room of rooms.values()) room.channel.updatePresence({ name: me }, document.hidden ? 'away' : 'online').catch(() => {})
})

// ---------------------------------------------------------------- rendering

function show(name) {
  const room = rooms.get(name)
  if (!room) return
  active = room
  room.unread = 0
  markRead(room, [...room.messages.values()])
  $('room-title').textContent = `# ${name}`
  renderRooms()
  renderMessages()
  renderPresence()
  renderTyping()
  $('input').focus()
}

function renderRooms() {
  $('rooms').replaceChildren(
    ...[...rooms.values()].map((room) => {
      const li = document.createElement('li')
      li.dataset.room = room.name
      li.className = room === active ? 'active' : ''
      li.tabIndex = 0
      li.append(Object.assign(document.createElement('span'), { textContent: `# ${room.name}` }))
      if (room.unread > 0) li.append(Object.assign(document.createElement('span'), { className: 'badge', textContent: String(room.unread) }))
      li.addEventListener('click', () => show(room.name))
      li.addEventListener('keydown', (e) => e.key === 'Enter' && show(room.name))
      return li
    }),
  )
}

const time = (d) => d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })

function renderMessages() {
  const list = $('messages')
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40
  const msgs = [...active.messages.values()].sort((a, b) => (a.offset ?? Infinity) - (b.offset ?? Infinity) || a.at - b.at)
  if (msgs.length === 0) {
    list.replaceChildren(Object.assign(document.createElement('li'), { className: 'empty', textContent: `No messages in #${active.name} yet. Say hello!` }))
    return
  }
  list.replaceChildren(
    ...msgs.map((m, i) => {
      const li = document.createElement('li')
      const prev = msgs[i - 1]
      const cont = prev && prev.sender === m.sender && m.at - prev.at < 5 * 60_000
      li.className = [m.mine ? 'mine' : '', cont ? 'cont' : ''].join(' ').trim()
      li.dataset.offset = m.offset ?? ''
      const meta = document.createElement('div')
      meta.className = 'meta'
      meta.append(Object.assign(document.createElement('span'), { className: 'who', textContent: m.sender ?? 'server' }))
      const t = Object.assign(document.createElement('time'), { textContent: time(m.at) })
      t.dateTime = m.at.toISOString()
      meta.append(t)
      if (m.mine) {
        const ticks = Object.assign(document.createElement('span'), { className: 'ticks', textContent: m.status === 'failed' ? '!' : TICKS[m.status] })
        ticks.dataset.status = m.status
        ticks.title = m.status
        meta.append(ticks)
      }
      li.append(meta, Object.assign(document.createElement('div'), { className: 'text', textContent: m.text }))
      return li
    }),
  )
  if (atBottom || msgs.at(-1)?.mine) list.scrollTop = list.scrollHeight
}

function renderPresence() {
  const users = [...active.members.values()].sort((a, b) => String(a.data?.name ?? a.id).localeCompare(String(b.data?.name ?? b.id)))
  $('here-count').textContent = `${users.length} here`
  $('presence').replaceChildren(
    ...users.map((u) => {
      const li = document.createElement('li')
      li.dataset.user = u.id
      li.dataset.state = u.state
      li.textContent = `${u.data?.name ?? u.id}${u.id === me ? ' (you)' : ''}${u.state !== 'online' ? ' · away' : ''}`
      return li
    }),
  )
}

function renderTyping() {
  const names = [...active.typing.keys()].filter((id) => id !== me)
  $('typing').textContent = names.length === 0 ? '' : `${names.join(', ')} ${names.length === 1 ? 'is' : 'are'} typing…`
}

let toastTimer
function toast(message) {
  $('toast').textContent = message
  $('toast').hidden = false
  clearTimeout(toastTimer)
  toastTimer = setTimeout(() => ($('toast').hidden = true), 5000)
}
