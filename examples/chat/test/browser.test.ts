import { type Browser, chromium, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { type ChatServer, startChatServer } from '../src/server.js'

// A real browser (Debian's Chromium, driven by playwright-core) against the demo server.
let chat: ChatServer
let browser: Browser

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

async function join(name: string): Promise<Page> {
  const page = await browser.newPage()
  page.on('pageerror', (err) => console.error(`[${name}] page error:`, err))
  await page.goto(chat.url)
  await page.fill('#name', name)
  await page.click('#login button')
  await page.waitForSelector('#status[data-state="connected"]')
  await page.waitForSelector('#room-title:has-text("general")')
  return page
}

describe('the chat demo in a browser', () => {
  it('one page sends, the other sees the message, the presence list and the typing indicator', async () => {
    const ada = await join('ada')
    const bob = await join('bob')

    // Presence: each sees both.
    await expect.poll(async () => (await ada.locator('#presence li').allTextContents()).sort(), { timeout: 10_000 }).toEqual(['ada', 'bob'])
    await expect.poll(async () => (await bob.locator('#presence li').allTextContents()).sort(), { timeout: 10_000 }).toEqual(['ada', 'bob'])

    // Typing: ada types, bob sees it.
    await ada.fill('#input', 'hello b')
    await ada.locator('#input').dispatchEvent('input')
    await expect.poll(() => bob.textContent('#typing'), { timeout: 10_000 }).toContain('ada is typing')

    // A message: ada sends, bob sees it (and ada sees her own, once).
    await ada.fill('#input', 'hello bob')
    await ada.click('#send')
    await expect.poll(() => bob.locator('#messages li').allTextContents(), { timeout: 10_000 }).toContain('adahello bob')
    await expect.poll(() => ada.locator('#messages li').allTextContents(), { timeout: 10_000 }).toEqual(['adahello bob'])

    // History: a third user joining later sees the message from the room's history.
    const cy = await join('cy')
    await expect.poll(() => cy.locator('#messages li.history').allTextContents(), { timeout: 10_000 }).toContain('adahello bob')

    // Leaving: closing bob's page removes him from ada's list.
    await bob.close()
    await expect.poll(async () => (await ada.locator('#presence li').allTextContents()).sort(), { timeout: 15_000 }).toEqual(['ada', 'cy'])
  }, 60_000)
})
