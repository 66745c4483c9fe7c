import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { AuthorizeContext, ChannelGrant } from '@tidings/core'
import { base64url, type CryptoKey, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose'
import { afterEach, describe, expect, it } from 'vitest'
import { CHANNEL_TOKEN_TYPE, createChannelTokens, createJwtAuthenticator, type ChannelTokensOptions } from '../src/index.js'

const NOW = Date.UTC(2026, 0, 1)
const nowSec = Math.floor(NOW / 1000)
const fixedNow = () => NOW
const SECRET = new TextEncoder().encode('k'.repeat(32) + 'channel-secret-for-tests')
const CHANNEL = 'private:orders-42'

/** A channel token signed by jose directly (not through `sign`), so the verifier is checked against tokens it did not make. */
async function forge(
  key: Parameters<SignJWT['sign']>[0],
  claims: JWTPayload & { ch?: unknown; info?: unknown } = {},
  header: Record<string, unknown> = {},
): Promise<string> {
  const { iat = nowSec, exp = nowSec + 300, ...rest } = claims
  return new SignJWT({ sub: 'ada', ch: CHANNEL, ...rest })
    .setProtectedHeader({ alg: 'HS256', typ: CHANNEL_TOKEN_TYPE, ...header })
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key)
}

const enc = (o: object) => base64url.encode(JSON.stringify(o))

interface Case {
  readonly name: string
  readonly token: string
  readonly channel?: string
  readonly userId?: string | undefined
  readonly pass: boolean
}

/** Runs every case through `verify`; answers the cases that were decided wrongly (both ways). */
async function decide(options: ChannelTokensOptions, cases: readonly Case[]) {
  const tokens = createChannelTokens({ now: fixedNow, ...options })
  const wronglyAccepted: string[] = []
  const wronglyRefused: string[] = []
  for (const c of cases) {
    const grant = await tokens.verify(c.token, { channel: c.channel ?? CHANNEL, userId: 'userId' in c ? c.userId : 'ada' })
    if (grant !== null && !c.pass) wronglyAccepted.push(c.name)
    if (grant === null && c.pass) wronglyRefused.push(c.name)
  }
  return { wronglyAccepted, wronglyRefused }
}

describe('channel token matrix (jose-signed tokens)', () => {
  it('HS256: 0 accepted that should be refused, 0 refused that should pass', async () => {
    const other = new TextEncoder().encode('x'.repeat(64))
    const good = await forge(SECRET, { info: { name: 'Ada' } })
    const [h, p, s] = good.split('.')
    const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p!))) as Record<string, unknown>
    const cases: Case[] = [
      { name: 'a valid token', token: good, pass: true },
      { name: 'a valid token from sign()', token: await createChannelTokens({ secret: SECRET, algorithms: ['HS256'], now: fixedNow }).sign({ channel: CHANNEL, userId: 'ada' }), pass: true },
      { name: 'expired within the skew', token: await forge(SECRET, { iat: nowSec - 100, exp: nowSec - 3 }), pass: true },
      { name: 'nbf within the skew', token: await forge(SECRET, { nbf: nowSec + 3 }), pass: true },
      { name: 'a lifetime of exactly maxTtlSec', token: await forge(SECRET, { exp: nowSec + 3600 }), pass: true },
      { name: 'wrong channel', token: good, channel: 'private:orders-43', pass: false },
      { name: 'a channel that only shares a prefix', token: await forge(SECRET, { ch: 'private:orders-4' }), pass: false },
      { name: 'other user', token: good, userId: 'bob', pass: false },
      { name: 'an anonymous connection', token: good, userId: undefined, pass: false },
      { name: 'expired beyond the skew', token: await forge(SECRET, { iat: nowSec - 100, exp: nowSec - 6 }), pass: false },
      { name: 'not yet valid', token: await forge(SECRET, { nbf: nowSec + 60 }), pass: false },
      { name: 'bad signature (another secret)', token: await forge(other), pass: false },
      { name: 'alg none', token: `${enc({ alg: 'none', typ: CHANNEL_TOKEN_TYPE })}.${p}.`, pass: false },
      { name: 'alg none with the original signature', token: `${enc({ alg: 'none', typ: CHANNEL_TOKEN_TYPE })}.${p}.${s}`, pass: false },
      { name: 'an algorithm outside the allow-list (HS512)', token: await forge(new TextEncoder().encode('y'.repeat(64)), {}, { alg: 'HS512' }), pass: false },
      { name: 'over-long TTL (exp - iat > maxTtlSec)', token: await forge(SECRET, { exp: nowSec + 3601 }), pass: false },
      { name: 'a year-long token', token: await forge(SECRET, { exp: nowSec + 365 * 86400 }), pass: false },
      { name: 'iat in the future to hide a long life', token: await forge(SECRET, { iat: nowSec + 86400, exp: nowSec + 86400 + 60 }), pass: false },
      { name: 'tampered info', token: `${h}.${enc({ ...payload, info: { name: 'Admin', role: 'owner' } })}.${s}`, pass: false },
      { name: 'tampered channel', token: `${h}.${enc({ ...payload, ch: 'private:orders-43' })}.${s}`, channel: 'private:orders-43', pass: false },
      { name: 'info that is not an object', token: await forge(SECRET, { info: ['admin'] }), pass: false },
      { name: 'no typ (a connection token signed with the same secret)', token: await forge(SECRET, {}, { typ: undefined }), pass: false },
      { name: 'typ JWT', token: await forge(SECRET, {}, { typ: 'JWT' }), pass: false },
      { name: 'no ch claim', token: await forge(SECRET, { ch: undefined }), pass: false },
      { name: 'no sub claim', token: await forge(SECRET, { sub: undefined }), pass: false },
      { name: 'garbage', token: 'a.b.c', pass: false },
      { name: 'an empty string', token: '', pass: false },
    ]
    const r = await decide({ secret: SECRET, algorithms: ['HS256'] }, cases)
    expect(r).toEqual({ wronglyAccepted: [], wronglyRefused: [] })
  })

  it('RS256 with a public key: HS/RS confusion, a foreign key, and issuer/audience are refused; valid tokens pass', async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
    const pem = await exportSPKI(publicKey)
    const stranger = await generateKeyPair('RS256')
    const good = { iss: 'https://app.test', aud: 'tidings' }
    const rs = (key: Parameters<SignJWT['sign']>[0], claims: JWTPayload = {}) => forge(key, { ...good, ...claims }, { alg: 'RS256' })
    const signer = createChannelTokens({ publicKey: pem, privateKey: await exportPKCS8(privateKey), algorithms: ['RS256'], issuer: good.iss, audience: good.aud, now: fixedNow })
    const cases: Case[] = [
      { name: 'a valid RS256 token', token: await rs(privateKey), pass: true },
      { name: 'a valid token from sign() with a PKCS#8 private key', token: await signer.sign({ channel: CHANNEL, userId: 'ada', presence: { name: 'Ada' } }), pass: true },
      { name: 'HS256 signed with the RSA public key PEM as secret', token: await forge(new TextEncoder().encode(pem), good, { alg: 'HS256' }), pass: false },
      { name: 'signed by another RSA key', token: await rs(stranger.privateKey), pass: false },
      { name: 'wrong issuer', token: await rs(privateKey, { iss: 'https://evil.test' }), pass: false },
      { name: 'no audience', token: await forge(privateKey, { iss: good.iss }, { alg: 'RS256' }), pass: false },
      { name: 'wrong audience', token: await rs(privateKey, { aud: 'other' }), pass: false },
      { name: 'other user', token: await rs(privateKey), userId: 'mallory', pass: false },
    ]
    for (const publicKeyForm of [pem, await exportJWK(publicKey), publicKey]) {
      const r = await decide({ publicKey: publicKeyForm, algorithms: ['RS256'], issuer: good.iss, audience: good.aud }, cases)
      expect(r).toEqual({ wronglyAccepted: [], wronglyRefused: [] })
    }
  })

  it('the grant carries expiresAt = exp × 1000 and presence = info, exactly as signed', async () => {
    const tokens = createChannelTokens({ secret: SECRET, algorithms: ['HS256'], now: fixedNow })
    const token = await tokens.sign({ channel: CHANNEL, userId: 'ada', presence: { name: 'Ada', color: 'teal' }, ttlSeconds: 120 })
    expect(await tokens.verify(token, { channel: CHANNEL, userId: 'ada' })).toEqual({ expiresAt: (nowSec + 120) * 1000, presence: { name: 'Ada', color: 'teal' } })
    const bare = await tokens.sign({ channel: CHANNEL, userId: 'ada' })
    const grant = await tokens.verify(bare, { channel: CHANNEL, userId: 'ada' })
    expect(grant).toEqual({ expiresAt: (nowSec + 600) * 1000 })
    expect(grant && 'presence' in grant).toBe(false)
  })

  it('onReject hears a reason for each refusal and never the token', async () => {
    const reasons: string[] = []
    const tokens = createChannelTokens({ secret: SECRET, algorithms: ['HS256'], now: fixedNow, onReject: (r) => reasons.push(r) })
    const token = await tokens.sign({ channel: CHANNEL, userId: 'ada' })
    await tokens.verify(token, { channel: 'private:orders-1', userId: 'ada' })
    await tokens.verify(token, { channel: CHANNEL, userId: 'bob' })
    await tokens.verify(token, { channel: CHANNEL, userId: undefined })
    await tokens.verify(await forge(SECRET, { exp: nowSec + 7200 }), { channel: CHANNEL, userId: 'ada' })
    expect(reasons).toEqual(['another channel', 'another user', 'anonymous connection', 'lifetime over maxTtlSec'])
    expect(reasons.join(' ')).not.toContain(token.split('.')[2]!)
  })

  it('a channel token is refused by the connection authenticator even when both share the secret', async () => {
    const tokens = createChannelTokens({ secret: SECRET, algorithms: ['HS256'], now: fixedNow })
    const auth = createJwtAuthenticator({ secret: SECRET, algorithms: ['HS256'], now: fixedNow })
    const channelToken = await tokens.sign({ channel: CHANNEL, userId: 'ada' })
    expect(await auth({ token: channelToken, headers: {}, transport: 'test' })).toBeNull()
    const connectionToken = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('ada').setIssuedAt(nowSec).setExpirationTime(nowSec + 60).sign(SECRET)
    expect(await auth({ token: connectionToken, headers: {}, transport: 'test' })).toMatchObject({ userId: 'ada' })
    expect(await tokens.verify(connectionToken, { channel: CHANNEL, userId: 'ada' })).toBeNull()
  })

  it('rule: denies without an auth string or with a refused one, allows with the grant', async () => {
    const tokens = createChannelTokens({ secret: SECRET, algorithms: ['HS256'], now: fixedNow })
    const ctx = (auth: string | undefined, userId: string | undefined = 'ada'): AuthorizeContext => ({ identity: { userId }, channel: CHANNEL, action: 'subscribe', params: { id: '42' }, auth })
    const token = await tokens.sign({ channel: CHANNEL, userId: 'ada', presence: { name: 'Ada' } })
    expect(await tokens.rule(ctx(undefined))).toBe(false)
    expect(await tokens.rule(ctx('a.b.c'))).toBe(false)
    expect(await tokens.rule(ctx(token, 'bob'))).toBe(false)
    expect(await tokens.rule(ctx(token))).toEqual<ChannelGrant>({ expiresAt: (nowSec + 600) * 1000, presence: { name: 'Ada' } })
  })
})

describe('sign and the options refuse mistakes', () => {
  it('sign throws for a TTL over maxTtlSec, a bad channel, an empty user, presence that is not an object', async () => {
    const tokens = createChannelTokens({ secret: SECRET, algorithms: ['HS256'], maxTtlSec: 900, now: fixedNow })
    await expect(tokens.sign({ channel: CHANNEL, userId: 'ada', ttlSeconds: 901 })).rejects.toThrow(/over maxTtlSec/)
    await expect(tokens.sign({ channel: CHANNEL, userId: 'ada', ttlSeconds: 365 * 86400 })).rejects.toThrow(/over maxTtlSec/)
    await expect(tokens.sign({ channel: CHANNEL, userId: 'ada', ttlSeconds: 0 })).rejects.toThrow(/ttlSeconds/)
    await expect(tokens.sign({ channel: '', userId: 'ada' })).rejects.toThrow(/channel/)
    await expect(tokens.sign({ channel: CHANNEL, userId: '' })).rejects.toThrow(/userId/)
    await expect(tokens.sign({ channel: CHANNEL, userId: 'ada', presence: ['x'] as never })).rejects.toThrow(/presence/)
    expect(await tokens.sign({ channel: CHANNEL, userId: 'ada', ttlSeconds: 900 })).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/)
  })

  it('the allow-list rules of the authenticator apply: none, HS/asymmetric mix, short secret, bounds', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true })
    const pem = await exportSPKI(publicKey)
    expect(() => createChannelTokens({ secret: SECRET, algorithms: ['none'] as never })).toThrow(/createChannelTokens: the algorithm "none"/)
    expect(() => createChannelTokens({ publicKey: pem, algorithms: ['ES256', 'HS256'] as never })).toThrow(/key confusion/)
    expect(() => createChannelTokens({ secret: 'short', algorithms: ['HS256'] })).toThrow(/at least 32/)
    expect(() => createChannelTokens({ secret: SECRET, algorithms: ['HS256'], maxTtlSec: 30 * 86400 })).toThrow(/maxTtlSec/)
    expect(() => createChannelTokens({ secret: SECRET, algorithms: ['HS256'], maxTtlSec: 60, defaultTtlSec: 120 })).toThrow(/over maxTtlSec/)
    expect(() => createChannelTokens({ publicKey: pem, algorithms: ['ES256'], signingAlgorithm: 'ES384' })).toThrow(/not in algorithms/)
    expect(() => createChannelTokens({ publicKey: pem, privateKey: pem, algorithms: ['ES256'] })).toThrow(/PKCS#8/)
    const publicJwk = await exportJWK(publicKey)
    expect(() => createChannelTokens({ publicKey: pem, privateKey: publicJwk, algorithms: ['ES256'] })).toThrow(/public JWK/)
    // A verify-only instance cannot sign.
    await expect(createChannelTokens({ publicKey: pem, algorithms: ['ES256'] }).sign({ channel: CHANNEL, userId: 'ada' })).rejects.toThrow(/needs a privateKey/)
    // A private JWK and a CryptoKey both sign.
    for (const key of [await exportJWK(privateKey), privateKey]) {
      const t = createChannelTokens({ publicKey: pem, privateKey: key, algorithms: ['ES256'], now: fixedNow })
      expect(await t.verify(await t.sign({ channel: CHANNEL, userId: 'ada' }), { channel: CHANNEL, userId: 'ada' })).toEqual({ expiresAt: (nowSec + 600) * 1000 })
    }
  })
})

describe('channel tokens with a JWKS over real HTTP', () => {
  let server: Server | undefined
  afterEach(async () => {
    server?.closeAllConnections()
    if (server) await new Promise((r) => server!.close(r))
    server = undefined
  })

  it('a token signed with a kid from the published set is accepted; a rotated-out kid is refused', async () => {
    const k1 = await generateKeyPair('ES256', { extractable: true })
    const k2 = await generateKeyPair('ES256', { extractable: true })
    const jwk = async (pub: CryptoKey, kid: string) => ({ ...(await exportJWK(pub)), kid, alg: 'ES256', use: 'sig' }) as JWK
    let keys = [await jwk(k1.publicKey, 'k1')]
    server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ keys }))
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
    const verifier = createChannelTokens({ jwksUrl, jwks: { cooldownMs: 0, cacheMaxAgeMs: 0 }, algorithms: ['ES256'], now: fixedNow })
    const signer1 = createChannelTokens({ jwksUrl, privateKey: k1.privateKey, kid: 'k1', algorithms: ['ES256'], now: fixedNow })
    const signer2 = createChannelTokens({ jwksUrl, privateKey: k2.privateKey, kid: 'k2', algorithms: ['ES256'], now: fixedNow })
    const t1 = await signer1.sign({ channel: CHANNEL, userId: 'ada' })
    expect(await verifier.verify(t1, { channel: CHANNEL, userId: 'ada' })).not.toBeNull()
    expect(await verifier.verify(await signer2.sign({ channel: CHANNEL, userId: 'ada' }), { channel: CHANNEL, userId: 'ada' })).toBeNull()
    keys = [await jwk(k2.publicKey, 'k2')]
    expect(await verifier.verify(await signer2.sign({ channel: CHANNEL, userId: 'ada' }), { channel: CHANNEL, userId: 'ada' })).not.toBeNull()
    expect(await verifier.verify(t1, { channel: CHANNEL, userId: 'ada' })).toBeNull()
  })
})
