import { mkdirSync } from 'node:fs'
import { join as pathJoin } from 'node:path'
import { type Browser, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ChatServer, startChatServer } from '../src/server.js'

// A real browser (Debian's Chromium, driven by playwright-core) against the demo server.
let chat: ChatServer
let browser: Browser
const shots = process.env.CHAT_SCREENSHOTS ?? pathJoin(import.meta.dirname, '..', '.screenshots')

beforeAll(async () => {
  chat = await startChatServer(0)
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
}, 60_000)

afterAll(async () => {
  await browser?.close()
  await chat?.close()
})

const errors: string[] = []

async function open(query = '', viewport = { width: 1200, height: 760 }): Promise<Page> {
  const page = await browser.newPage({ viewport })
  page.on('pageerror', (err) => errors.push(String(err)))
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') errors.push(m.text())
  })
  await page.goto(`${chat.url}/${query}`)
  return page
}

async function join(name: string, query = '', viewport?: { width: number; height: number }): Promise<Page> {
  const page = await open(query, viewport)
  await page.fill('#name', name)
  await page.click('#join')
  await page.waitForSelector('#status[data-state="connected"]')
  await page.waitForSelector('#room-title:has-text("general")')
  return page
}

const texts = (page: Page) => page.locator('#messages li .text').allTextContents()
const presence = async (page: Page) => (await page.locator('#presence li').allTextContents()).map((t) => t.replace(' (you)', '')).sort()

describe('the chat demo in a browser', () => {
  it('the login panel hides the chat panels, and a bad name gets a clear message', async () => {
    const page = await open()
    expect(await page.isVisible('#login')).toBe(true)
    expect(await page.isVisible('#app')).toBe(false)
    expect(await page.isVisible('nav')).toBe(false)
    await page.fill('#name', '!!')
    await page.click('#join')
    await expect.poll(() => page.textContent('#login-error')).toMatch(/letters, digits/)
    expect(await page.isVisible('#login-error')).toBe(true)
    expect(await page.isVisible('#app')).toBe(false)
    await page.close()
  })

  it('a name with a space ("Ada Lovelace") signs in with a token, and the chat replaces the login panel', async () => {
    const page = await join('Ada Lovelace')
    expect(await page.isVisible('#login')).toBe(false)
    expect(await page.isVisible('#app')).toBe(true)
    expect(await page.textContent('#me')).toBe('Ada Lovelace')
    expect(chat.hub.connections.local({ userId: 'Ada Lovelace' })).toHaveLength(1)
    await page.close()
  })

  it('messages, presence, typing; no duplicates after switching rooms back and forth; ticks sent → delivered → read; unread counts', async () => {
    const ada = await join('ada')
    const bob = await join('bob')
    await expect.poll(() => presence(ada), { timeout: 10_000 }).toEqual(['ada', 'bob'])
    await expect.poll(() => presence(bob), { timeout: 10_000 }).toEqual(['ada', 'bob'])

    // Typing: ada types, bob sees it.
    await ada.fill('#input', 'hello b')
    await ada.locator('#input').dispatchEvent('input')
    await expect.poll(() => bob.textContent('#typing'), { timeout: 10_000 }).toContain('ada is typing')

    // Switch rooms back and forth on both pages before talking (the demo's old bug: listeners
    // added to the cached channel on every visit showed each message two or three times).
    for (const page of [ada, bob]) {
      for (const room of ['design', 'general', 'random', 'general', 'design', 'general']) await page.click(`#rooms li[data-room="${room}"]`)
    }
    await ada.fill('#input', 'hello bob')
    await ada.click('#send')
    await expect.poll(() => texts(bob), { timeout: 10_000 }).toEqual(['hello bob'])
    await expect.poll(() => texts(ada), { timeout: 10_000 }).toEqual(['hello bob'])
    await bob.waitForTimeout(300)
    expect(await texts(bob)).toEqual(['hello bob'])
    // Own messages are marked, with a time.
    expect(await ada.locator('#messages li.mine').count()).toBe(1)
    expect(await bob.locator('#messages li.mine').count()).toBe(0)
    expect(await bob.locator('#messages li time').first().textContent()).toMatch(/\d{1,2}:\d{2}/)
    // Ticks: bob has the room open, so the message is delivered and read.
    await expect.poll(() => ada.locator('#messages li.mine .ticks').getAttribute('data-status'), { timeout: 10_000 }).toBe('read')

    // Unread: bob is in #design while ada writes in #general.
    await bob.click('#rooms li[data-room="design"]')
    await ada.fill('#input', 'are you there?')
    await ada.click('#send')
    await expect.poll(() => bob.locator('#rooms li[data-room="general"] .badge').textContent(), { timeout: 10_000 }).toBe('1')
    await expect.poll(() => ada.locator('#messages li.mine .ticks').last().getAttribute('data-status'), { timeout: 10_000 }).toBe('delivered')
    await bob.click('#rooms li[data-room="general"]')
    expect(await bob.locator('#rooms li[data-room="general"] .badge').count()).toBe(0)
    expect(await texts(bob)).toEqual(['hello bob', 'are you there?'])
    await expect.poll(() => ada.locator('#messages li.mine .ticks').last().getAttribute('data-status'), { timeout: 10_000 }).toBe('read')

    // History: a third user joining later sees the messages once.
    const cy = await join('cy')
    await expect.poll(() => texts(cy), { timeout: 10_000 }).toEqual(['hello bob', 'are you there?'])

    // Leaving: closing bob's page removes him from ada's list.
    await bob.close()
    await expect.poll(() => presence(ada), { timeout: 15_000 }).toEqual(['ada', 'cy'])

    // Quick sending: ten messages in a row, no rate-limit errors in the console.
    for (let i = 0; i < 10; i++) {
      await ada.fill('#input', `quick ${i}`)
      await ada.locator('#input').dispatchEvent('input')
      await ada.click('#send')
    }
    await expect.poll(async () => (await texts(cy)).length, { timeout: 10_000 }).toBe(12)
    expect(errors.filter((e) => /RT_006|RT_009|rate/i.test(e))).toEqual([])
    await ada.close()
    await cy.close()
  }, 90_000)

  it('at 390 px wide the page does not scroll sideways (login and chat)', async () => {
    const phone = { width: 390, height: 780 }
    const page = await open('', phone)
    const overflow = () => page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
    expect(await overflow()).toBe(0)
    await page.fill('#name', 'Grace Hopper')
    await page.click('#join')
    await page.waitForSelector('#status[data-state="connected"]')
    await page.fill('#input', 'a-very-long-word-without-any-spaces-that-could-push-the-layout-sideways-if-it-did-not-wrap')
    await page.click('#send')
    await page.fill('#input', 'Hello from a phone')
    await page.click('#send')
    await expect.poll(() => page.locator('#messages li .ticks').count()).toBe(2)
    expect(await overflow()).toBe(0)
    mkdirSync(shots, { recursive: true })
    await page.screenshot({ path: pathJoin(shots, 'phone-390.png') })
    await page.close()
  })

  it('a page that goes away releases its long-poll session at once (pagehide), not at the session timeout', async () => {
    const page = await join('Leaving User', '?transport=long-poll')
    await expect.poll(() => chat.hub.connections.local({ userId: 'Leaving User' }).map((c) => c.transport)).toEqual(['long-poll'])
    await page.goto('about:blank')
    await expect.poll(() => chat.hub.connections.local({ userId: 'Leaving User' }).length, { timeout: 3000 }).toBe(0)
    await page.close()
  })

  it('desktop screenshot', async () => {
    const ada = await join('Ada Lovelace')
    const bob = await join('Bob')
    await bob.fill('#input', 'Morning! Has anyone seen the new room designs?')
    await bob.click('#send')
    await ada.fill('#input', 'Yes, they look great. Shipping them today.')
    await ada.click('#send')
    await expect.poll(() => ada.locator('#messages li.mine .ticks').last().getAttribute('data-status'), { timeout: 10_000 }).toBe('read')
    await bob.fill('#input', 'Nice')
    await bob.locator('#input').dispatchEvent('input')
    await expect.poll(() => ada.textContent('#typing'), { timeout: 10_000 }).toContain('Bob is typing')
    mkdirSync(shots, { recursive: true })
    await ada.screenshot({ path: pathJoin(shots, 'desktop.png') })
    await ada.close()
    await bob.close()
  })
})
