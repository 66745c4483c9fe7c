/**
 * The edge guard's address lists (`allowIps`, `denyIps`): CIDR and single addresses, IPv4 and
 * IPv6, `::ffff:`-mapped IPv4 as IPv4, malformed entries refused at creation, and the address
 * checked being the one `trustProxy` decides — over real sockets (loopback, IPv4 and IPv6).
 */
import http, { type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { describe, expect, it } from 'vitest'
import { compileIpList, createEdgeGuard, type EdgeOptions } from '../src/edge.js'
import { cleanups } from './support.js'

/** What the guard says about one real request to a server on `host`, sent with `headers`. */
async function judge(options: EdgeOptions, host: string, connectTo: string, headers: Record<string, string> = {}): Promise<{ ip: string; allowed: boolean }> {
  const guard = createEdgeGuard(options)
  let seen: { ip: string; allowed: boolean } | undefined
  const server = http.createServer((req: IncomingMessage, res) => {
    const ip = guard.clientIp(req)
    seen = { ip, allowed: guard.addressAllowed(ip) }
    res.end()
  })
  await new Promise<void>((r) => server.listen(0, host, r))
  cleanups.push(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  const port = (server.address() as AddressInfo).port
  const url = connectTo.includes(':') ? `http://[${connectTo}]:${port}/` : `http://${connectTo}:${port}/`
  await (await fetch(url, { headers })).arrayBuffer()
  return seen!
}

describe('compileIpList: matching', () => {
  it('an IPv4 CIDR block matches inside it and not one address past either edge', () => {
    const m = compileIpList(['10.1.2.0/24'])!
    expect(m('10.1.2.0')).toBe(true)
    expect(m('10.1.2.255')).toBe(true)
    expect(m('10.1.1.255')).toBe(false)
    expect(m('10.1.3.0')).toBe(false)
  })

  it('a single IPv4 address is a /32: its neighbour does not match', () => {
    const m = compileIpList(['192.0.2.7'])!
    expect(m('192.0.2.7')).toBe(true)
    expect(m('192.0.2.8')).toBe(false)
  })

  it('an IPv6 block matches in any spelling (compressed, expanded, upper case) and not outside', () => {
    const m = compileIpList(['2001:DB8:abcd::/48'])!
    expect(m('2001:db8:abcd::1')).toBe(true)
    expect(m('2001:0db8:abcd:0012:0000:0000:0000:0001')).toBe(true)
    expect(m('2001:DB8:ABCD:FFFF::1')).toBe(true)
    expect(m('2001:db8:abce::1')).toBe(false)
    const one = compileIpList(['::1'])!
    expect(one('::1')).toBe(true)
    expect(one('::2')).toBe(false)
  })

  it('an IPv6 block never catches an IPv4 client, nor an IPv4 block an IPv6 one (::/0 is not everything)', () => {
    const v6 = compileIpList(['::/0'])!
    expect(v6('2001:db8::1')).toBe(true)
    expect(v6('127.0.0.1')).toBe(false)
    const v4 = compileIpList(['0.0.0.0/0'])!
    expect(v4('8.8.8.8')).toBe(true)
    expect(v4('2001:db8::1')).toBe(false)
  })

  it('a ::ffff:-mapped IPv4 address is the IPv4 address, in the list and as a client (dotted or hex)', () => {
    const m = compileIpList(['10.0.0.0/8'])!
    expect(m('::ffff:10.9.8.7')).toBe(true)
    expect(m('::FFFF:10.9.8.7')).toBe(true)
    expect(m('::ffff:a09:807')).toBe(true)
    expect(m('0:0:0:0:0:ffff:10.9.8.7')).toBe(true)
    expect(m('::ffff:11.0.0.1')).toBe(false)
    const mapped = compileIpList(['::ffff:192.0.2.0/120'])!
    expect(mapped('192.0.2.99')).toBe(true)
    expect(mapped('192.0.3.1')).toBe(false)
  })

  it('an address that is not an IP (a garbage X-Forwarded-For) matches no list', () => {
    const m = compileIpList(['0.0.0.0/0', '::/0'])!
    expect(m('unknown')).toBe(false)
    expect(m('1.2.3.4:8080')).toBe(false)
    expect(m('')).toBe(false)
  })

  it('an empty or absent list is no list', () => {
    expect(compileIpList([])).toBeUndefined()
    expect(compileIpList(undefined)).toBeUndefined()
  })
})

describe('createEdgeGuard: malformed allowIps / denyIps throw a TypeError naming the entry', () => {
  const bad = ['10.0.0.0/33', '::/129', '10.0.0.256', '10.0.0', 'example.com', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', '2001:db8:::1', '::ffff:10.0.0.0/80', '']
  for (const entry of bad) {
    it(`${JSON.stringify(entry)} is refused at creation, not silently ignored`, () => {
      expect(() => createEdgeGuard({ denyIps: ['192.0.2.1', entry] })).toThrow(TypeError)
      expect(() => createEdgeGuard({ allowIps: [entry] })).toThrow(`allowIps has an invalid entry ${JSON.stringify(entry)}`)
    })
  }

  it('a non-string entry and a non-array list are TypeErrors too', () => {
    expect(() => createEdgeGuard({ allowIps: [42 as unknown as string] })).toThrow(TypeError)
    expect(() => createEdgeGuard({ denyIps: '10.0.0.0/8' as unknown as string[] })).toThrow(TypeError)
  })
})

describe('createEdgeGuard: addressAllowed', () => {
  it('denyIps wins over allowIps; a non-empty allowIps refuses everything it does not list', () => {
    const g = createEdgeGuard({ allowIps: ['10.0.0.0/8', '2001:db8::/32'], denyIps: ['10.6.6.0/24'] })
    expect(g.addressAllowed('10.1.1.1')).toBe(true)
    expect(g.addressAllowed('2001:db8::5')).toBe(true)
    expect(g.addressAllowed('10.6.6.6')).toBe(false)
    expect(g.addressAllowed('192.0.2.1')).toBe(false)
    expect(g.addressAllowed('2001:db9::5')).toBe(false)
  })

  it('with no lists every address passes (the default is unchanged)', () => {
    const g = createEdgeGuard()
    expect(g.addressAllowed('192.0.2.1')).toBe(true)
    expect(g.addressAllowed('unknown')).toBe(true)
  })
})

describe('createEdgeGuard: the address checked is the real client of a real socket', () => {
  it('an IPv4 loopback client in denyIps is refused; one outside it passes', async () => {
    expect(await judge({ denyIps: ['127.0.0.0/8'] }, '127.0.0.1', '127.0.0.1')).toEqual({ ip: '127.0.0.1', allowed: false })
    expect(await judge({ denyIps: ['10.0.0.0/8'] }, '127.0.0.1', '127.0.0.1')).toEqual({ ip: '127.0.0.1', allowed: true })
  })

  it('an IPv6 loopback client is matched by an IPv6 list and not by an IPv4 one', async () => {
    expect(await judge({ denyIps: ['::1/128'] }, '::1', '::1')).toEqual({ ip: '::1', allowed: false })
    expect(await judge({ allowIps: ['::1'] }, '::1', '::1')).toEqual({ ip: '::1', allowed: true })
    expect(await judge({ allowIps: ['127.0.0.0/8'] }, '::1', '::1')).toEqual({ ip: '::1', allowed: false })
  })

  it('an IPv4 client of a dual-stack server (socket reports ::ffff:127.0.0.1) is matched as IPv4, and by a mapped entry', async () => {
    expect(await judge({ allowIps: ['127.0.0.1'] }, '::', '127.0.0.1')).toEqual({ ip: '127.0.0.1', allowed: true })
    expect(await judge({ denyIps: ['::ffff:127.0.0.0/104'] }, '::', '127.0.0.1')).toEqual({ ip: '127.0.0.1', allowed: false })
  })

  it('without trustProxy a forged X-Forwarded-For does not get a denied peer in', async () => {
    expect(await judge({ allowIps: ['203.0.113.0/24'] }, '127.0.0.1', '127.0.0.1', { 'x-forwarded-for': '203.0.113.9' })).toEqual({ ip: '127.0.0.1', allowed: false })
  })

  it('behind trustProxy the forwarded address decides, not the proxy (loopback) peer', async () => {
    const options: EdgeOptions = { trustProxy: 1, allowIps: ['203.0.113.0/24', '2001:db8::/32'] }
    expect(await judge(options, '127.0.0.1', '127.0.0.1', { 'x-forwarded-for': '203.0.113.9' })).toEqual({ ip: '203.0.113.9', allowed: true })
    expect(await judge(options, '127.0.0.1', '127.0.0.1', { 'x-forwarded-for': '2001:db8::7' })).toEqual({ ip: '2001:db8::7', allowed: true })
    expect(await judge(options, '127.0.0.1', '127.0.0.1', { 'x-forwarded-for': '198.51.100.1' })).toEqual({ ip: '198.51.100.1', allowed: false })
    expect(await judge({ trustProxy: true, denyIps: ['198.51.100.0/24'] }, '127.0.0.1', '127.0.0.1', { 'x-forwarded-for': '198.51.100.1, 127.0.0.1' })).toEqual({ ip: '198.51.100.1', allowed: false })
  })
})
