import { once } from 'node:events'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { AuthRequest, Identity, ServerFrameOf } from '@tidings/core'
import { createTestHub } from '@tidings/core/testing'
import { base64url, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, generateSecret, importPKCS8, type JWK, type JWTPayload, SignJWT } from 'jose'
import { afterEach, describe, expect, it } from 'vitest'
import { createJwtAuthenticator, type JwtAuthenticatorOptions } from '../src/index.js'

const NOW = Date.UTC(2026, 0, 1) // the test hub's manual clock starts here
const nowSec = Math.floor(NOW / 1000)
const fixedNow = () => NOW

const req = (token: string | undefined, headers: AuthRequest['headers'] = {}): AuthRequest => ({ token, headers, transport: 'test' })

async function rawSecret(alg: 'HS256' | 'HS384' | 'HS512'): Promise<Uint8Array> {
  const key = await generateSecret(alg, { extractable: true })
  const { k } = await exportJWK(key)
  if (k === undefined) throw new Error('generateSecret gave no raw secret')
  return base64url.decode(k)
}

async function sign(key: Parameters<SignJWT['sign']>[0], alg: string, claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  return new SignJWT({ roles: ['reader'], ...claims })
    .setProtectedHeader({ alg, ...header })
    .setSubject((claims.sub as string | undefined) ?? 'alice')
    .setIssuedAt(claims.iat ?? nowSec)
    .setExpirationTime(claims.exp ?? nowSec + 600)
    .sign(key)
}

const verify = async (o: JwtAuthenticatorOptions, token: string | undefined, headers?: AuthRequest['headers']) =>
  (await createJwtAuthenticator({ now: fixedNow, ...o })(req(token, headers))) ?? null

describe('accepted algorithm families', () => {
  for (const alg of ['HS256', 'HS384', 'HS512'] as const) {
    it(`${alg} with a generated secret is accepted and mapped to the identity`, async () => {
      const secret = await rawSecret(alg)
      const token = await sign(secret, alg)
      const id = await verify({ secret, algorithms: [alg] }, token)
      expect(id).toMatchObject({ userId: 'alice', roles: ['reader'], expiresAt: (nowSec + 600) * 1000 })
      expect(id?.claims).toMatchObject({ sub: 'alice', iat: nowSec })
    })
  }
  for (const alg of ['RS256', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'] as const) {
    it(`${alg}: a token is accepted with the public key as PEM, JWK and CryptoKey`, async () => {
      const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
      const token = await sign(privateKey, alg)
      const pem = await exportSPKI(publicKey)
      const jwk = await exportJWK(publicKey)
      for (const key of [pem, jwk, publicKey]) {
        expect(await verify({ publicKey: key, algorithms: [alg] }, token)).toMatchObject({ userId: 'alice', expiresAt: (nowSec + 600) * 1000 })
      }
    })
  }
  it('the token is read from an Authorization: Bearer header when the request has no token', async () => {
    const secret = await rawSecret('HS256')
    const token = await sign(secret, 'HS256')
    expect(await verify({ secret, algorithms: ['HS256'] }, undefined, { authorization: `Bearer ${token}` })).toMatchObject({ userId: 'alice' })
    expect(await verify({ secret, algorithms: ['HS256'] }, undefined, { authorization: `Basic ${token}` })).toBeNull()
    expect(await verify({ secret, algorithms: ['HS256'] }, undefined, {})).toBeNull()
  })
  it('userIdClaim and rolesClaim read a named or nested claim; a scope string is split into roles', async () => {
    const secret = await rawSecret('HS256')
    const token = await sign(secret, 'HS256', { uid: 42, realm: { roles: ['admin', 7, 'ops'] }, scope: 'read write' })
    expect(await verify({ secret, algorithms: ['HS256'], userIdClaim: 'uid', rolesClaim: ['realm', 'roles'] }, token)).toMatchObject({ userId: '42', roles: ['admin', 'ops'] })
    expect(await verify({ secret, algorithms: ['HS256'], rolesClaim: 'scope' }, token)).toMatchObject({ userId: 'alice', roles: ['read', 'write'] })
    expect(await verify({ secret, algorithms: ['HS256'], userIdClaim: 'missing' }, token)).toBeNull()
  })
})

describe('refused tokens answer null, never throw', () => {
  const setup = async () => {
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
    const pem = await exportSPKI(publicKey)
    const reasons: string[] = []
    const options: JwtAuthenticatorOptions = { publicKey: pem, algorithms: ['RS256'], issuer: 'https://issuer.test', audience: 'tidings', onReject: (r) => reasons.push(r) }
    const good = { iss: 'https://issuer.test', aud: 'tidings' }
    return { publicKey, privateKey, pem, options, good, reasons }
  }

  it('a valid token passes the same checks (so the refusals below are meaningful)', async () => {
    const s = await setup()
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', s.good))).toMatchObject({ userId: 'alice' })
    expect(s.reasons).toEqual([])
  })
  it('expired beyond the clock skew is refused; within the skew it passes', async () => {
    const s = await setup()
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { ...s.good, iat: nowSec - 100, exp: nowSec - 6 }))).toBeNull()
    expect(s.reasons).toEqual(['ERR_JWT_EXPIRED'])
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { ...s.good, iat: nowSec - 100, exp: nowSec - 4 }))).toMatchObject({ userId: 'alice' })
    expect(await verify({ ...s.options, clockToleranceSec: 0 }, await sign(s.privateKey, 'RS256', { ...s.good, iat: nowSec - 100, exp: nowSec - 1 }))).toBeNull()
  })
  it('nbf in the future beyond the skew is refused; within the skew it passes', async () => {
    const s = await setup()
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { ...s.good, nbf: nowSec + 60 }))).toBeNull()
    expect(s.reasons).toEqual(['ERR_JWT_CLAIM_VALIDATION_FAILED'])
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { ...s.good, nbf: nowSec + 3 }))).toMatchObject({ userId: 'alice' })
  })
  it('a wrong or missing audience is refused', async () => {
    const s = await setup()
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { ...s.good, aud: 'someone-else' }))).toBeNull()
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { iss: s.good.iss }))).toBeNull()
  })
  it('a wrong or missing issuer is refused', async () => {
    const s = await setup()
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { ...s.good, iss: 'https://evil.test' }))).toBeNull()
    expect(await verify(s.options, await sign(s.privateKey, 'RS256', { aud: s.good.aud }))).toBeNull()
  })
  it('a token without exp is refused unless requireExp is false; then it has no expiresAt', async () => {
    const s = await setup()
    const noExp = await new SignJWT({ ...s.good }).setProtectedHeader({ alg: 'RS256' }).setSubject('alice').sign(s.privateKey)
    expect(await verify(s.options, noExp)).toBeNull()
    const id = await verify({ ...s.options, requireExp: false }, noExp)
    expect(id).toMatchObject({ userId: 'alice' })
    expect(id?.expiresAt).toBeUndefined()
  })
  it('a token older than maxTokenAgeSec (or without iat) is refused', async () => {
    const s = await setup()
    expect(await verify({ ...s.options, maxTokenAgeSec: 60 }, await sign(s.privateKey, 'RS256', { ...s.good, iat: nowSec - 120 }))).toBeNull()
    expect(await verify({ ...s.options, maxTokenAgeSec: 60 }, await sign(s.privateKey, 'RS256', { ...s.good, iat: nowSec - 30 }))).toMatchObject({ userId: 'alice' })
  })
  it('an algorithm outside the allow-list is refused even when the key could verify it', async () => {
    const s = await setup()
    // The same RSA key signing RS512, but only RS256 is allowed.
    const rs512 = await importPKCS8(await exportPKCS8(s.privateKey), 'RS512')
    expect(await verify({ ...s.options, algorithms: ['RS256', 'RS512'] }, await sign(rs512, 'RS512', s.good))).toMatchObject({ userId: 'alice' })
    expect(await verify(s.options, await sign(rs512, 'RS512', s.good))).toBeNull()
    expect(s.reasons).toEqual(['ERR_JOSE_ALG_NOT_ALLOWED'])
    const secret = await rawSecret('HS512')
    expect(await verify({ secret, algorithms: ['HS256'] }, await sign(secret, 'HS512'))).toBeNull()
  })
  it('an unsigned alg:none token crafted by hand is refused', async () => {
    const s = await setup()
    const enc = (o: object) => base64url.encode(JSON.stringify(o))
    const payload = enc({ sub: 'mallory', iss: s.good.iss, aud: s.good.aud, iat: nowSec, exp: nowSec + 600 })
    for (const alg of ['none', 'None', 'NONE']) {
      expect(await verify(s.options, `${enc({ alg, typ: 'JWT' })}.${payload}.`)).toBeNull()
    }
    const secret = await rawSecret('HS256')
    expect(await verify({ secret, algorithms: ['HS256'] }, `${enc({ alg: 'none' })}.${payload}.`)).toBeNull()
  })
  it('HS/RS key confusion: an HS256 token whose secret is the RSA public key PEM is refused when RS256 is allowed', async () => {
    const s = await setup()
    const forged = await sign(new TextEncoder().encode(s.pem), 'HS256', { ...s.good, sub: 'mallory' })
    expect(await verify(s.options, forged)).toBeNull()
    expect(await verify({ ...s.options, publicKey: s.publicKey }, forged)).toBeNull()
    expect(await verify({ ...s.options, publicKey: await exportJWK(s.publicKey) }, forged)).toBeNull()
  })
  it('a tampered payload, a signature by another key, garbage and an empty token are refused', async () => {
    const s = await setup()
    const token = await sign(s.privateKey, 'RS256', s.good)
    const [h, , sig] = token.split('.')
    const tampered = `${h}.${base64url.encode(JSON.stringify({ ...s.good, sub: 'admin', roles: ['admin'], iat: nowSec, exp: nowSec + 600 }))}.${sig}`
    expect(await verify(s.options, tampered)).toBeNull()
    const other = await generateKeyPair('RS256')
    expect(await verify(s.options, await sign(other.privateKey, 'RS256', s.good))).toBeNull()
    for (const bad of ['not-a-jwt', 'a.b.c', '', `${token}x`]) expect(await verify(s.options, bad)).toBeNull()
  })
  it('an onReject that throws does not turn a refusal into a throw', async () => {
    const s = await setup()
    const auth = createJwtAuthenticator({ ...s.options, now: fixedNow, onReject: () => { throw new Error('listener') } })
    await expect(Promise.resolve(auth(req('a.b.c')))).resolves.toBeNull()
  })
})

describe('options are checked when the authenticator is created', () => {
  it('an allow-list mixing HS with asymmetric algorithms is refused (key confusion)', async () => {
    const { publicKey } = await generateKeyPair('RS256', { extractable: true })
    const pem = await exportSPKI(publicKey)
    expect(() => createJwtAuthenticator({ publicKey: pem, algorithms: ['RS256', 'HS256'] as never })).toThrow(/key confusion/)
    expect(() => createJwtAuthenticator({ secret: 'x'.repeat(64), algorithms: ['HS256', 'RS256'] as never })).toThrow(/key confusion/)
    expect(() => createJwtAuthenticator({ publicKey: pem, algorithms: ['HS256'] as never })).toThrow(/need a secret/)
    expect(() => createJwtAuthenticator({ secret: 'x'.repeat(64), algorithms: ['RS256'] as never })).toThrow(/only HS256/)
  })
  it('none, an empty or missing allow-list and unknown algorithms are refused', () => {
    const secret = 'x'.repeat(64)
    expect(() => createJwtAuthenticator({ secret, algorithms: ['none'] as never })).toThrow(/never/)
    expect(() => createJwtAuthenticator({ secret, algorithms: [] })).toThrow(/required/)
    expect(() => createJwtAuthenticator({ secret } as never)).toThrow(/required/)
    expect(() => createJwtAuthenticator({ secret, algorithms: ['HS1'] as never })).toThrow(/unknown/)
  })
  it('a secret shorter than the hash, a private key as publicKey, and zero or two key sources are refused', async () => {
    expect(() => createJwtAuthenticator({ secret: 'short', algorithms: ['HS256'] })).toThrow(/at least 32/)
    expect(() => createJwtAuthenticator({ secret: 'x'.repeat(32), algorithms: ['HS256', 'HS512'] })).toThrow(/at least 64/)
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const jwk = await exportJWK(privateKey)
    expect(() => createJwtAuthenticator({ publicKey: jwk, algorithms: ['ES256'] })).toThrow(/private JWK/)
    expect(() => createJwtAuthenticator({ publicKey: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----', algorithms: ['ES256'] })).toThrow(/private key/)
    expect(() => createJwtAuthenticator({ algorithms: ['ES256'] } as never)).toThrow(/exactly one/)
    expect(() => createJwtAuthenticator({ secret: 'x'.repeat(64), jwksUrl: 'http://127.0.0.1/', algorithms: ['HS256'] } as never)).toThrow(/exactly one/)
  })
})

describe('JWKS from a real HTTP server', () => {
  let server: Server | undefined
  afterEach(async () => {
    server?.closeAllConnections()
    if (server) await new Promise((r) => server!.close(r))
    server = undefined
  })

  async function jwksServer(keys: () => JWK[]) {
    const state = { fetches: 0 }
    server = createServer((_req, res) => {
      state.fetches++
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ keys: keys() }))
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`
    return { state, url }
  }

  async function keyWithKid(alg: 'RS256' | 'ES256', kid: string) {
    const pair = await generateKeyPair(alg, { extractable: true })
    return { ...pair, jwk: { ...(await exportJWK(pair.publicKey)), kid, alg, use: 'sig' } as JWK }
  }

  it('the key set is fetched once and cached; a rotated key with a new kid is fetched and accepted; an unknown kid is refused', async () => {
    const k1 = await keyWithKid('RS256', 'k1')
    const k2 = await keyWithKid('ES256', 'k2')
    let published: JWK[] = [k1.jwk]
    const { state, url } = await jwksServer(() => published)
    const auth = createJwtAuthenticator({ jwksUrl: url, jwks: { cooldownMs: 0 }, algorithms: ['RS256', 'ES256'], now: fixedNow })

    const t1 = await sign(k1.privateKey, 'RS256', {}, { kid: 'k1' })
    expect(await auth(req(t1))).toMatchObject({ userId: 'alice' })
    expect(await auth(req(t1))).toMatchObject({ userId: 'alice' })
    expect(state.fetches).toBe(1)

    // Rotation: the issuer publishes k2 and signs with it.
    published = [k1.jwk, k2.jwk]
    const t2 = await sign(k2.privateKey, 'ES256', { sub: 'bob' }, { kid: 'k2' })
    expect(await auth(req(t2))).toMatchObject({ userId: 'bob' })
    expect(state.fetches).toBe(2)

    // k1 retired, and a token with a kid the set never had.
    published = [k2.jwk]
    const stranger = await keyWithKid('RS256', 'k9')
    expect(await auth(req(await sign(stranger.privateKey, 'RS256', {}, { kid: 'k9' })))).toBeNull()
    expect(state.fetches).toBe(3)
    // A token signed by an unpublished key but claiming a published kid is refused.
    const impostor = await keyWithKid('ES256', 'k2')
    expect(await auth(req(await sign(impostor.privateKey, 'ES256', {}, { kid: 'k2' })))).toBeNull()
    expect(await auth(req(await sign(k2.privateKey, 'ES256', {}, { kid: 'k2' })))).toMatchObject({ userId: 'alice' })
  })

  it('an unreachable JWKS refuses tokens without throwing', async () => {
    const { url } = await jwksServer(() => [])
    await new Promise((r) => { server!.closeAllConnections(); server!.close(r) })
    server = undefined
    const k = await keyWithKid('RS256', 'k1')
    const auth = createJwtAuthenticator({ jwksUrl: url, algorithms: ['RS256'], now: fixedNow })
    expect(await auth(req(await sign(k.privateKey, 'RS256', {}, { kid: 'k1' })))).toBeNull()
  })
})

describe('end to end through a real hub', () => {
  it('a valid token connects as its user with expiresAt; a refused one gets RT_002; expiry warns, a refresh extends, no refresh closes 4001', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256')
    let clock: () => number = () => NOW
    const authenticate = createJwtAuthenticator({ publicKey, algorithms: ['ES256'], audience: 'tidings', now: () => clock() })
    await using t = createTestHub({ authenticate, allowAnonymous: false, credentials: { refreshBeforeMs: 60_000, graceMs: 30_000 } })
    clock = () => t.clock.now()
    const exp = nowSec + 300
    const alice = await t.connect({ token: await sign(privateKey, 'ES256', { aud: 'tidings', exp }) })
    expect(alice.userId).toBe('alice')
    const connected = alice.frames.find((f) => f.type === 'connected') as ServerFrameOf<'connected'>
    expect(connected.expiresAt).toBe(exp * 1000)
    const conn = (await t.hub.connections.list()).find((c) => c.userId === 'alice')
    expect(conn).toBeDefined()

    // Refused: wrong audience, and an expired token.
    await expect(t.connect({ token: await sign(privateKey, 'ES256', { aud: 'other', exp }) })).rejects.toMatchObject({ code: 'RT_002' })
    await expect(t.connect({ token: await sign(privateKey, 'ES256', { aud: 'tidings', iat: nowSec - 900, exp: nowSec - 60 }) })).rejects.toMatchObject({ code: 'RT_002' })

    // 60 s before exp: auth:expiring; a refreshed token moves the expiry.
    await t.advance(241_000)
    expect(alice.frames.some((f) => f.type === 'auth:expiring')).toBe(true)
    const exp2 = nowSec + 900
    const answer = await alice.request<ServerFrameOf<'authenticated'>>({ type: 'auth', v: 1, token: await sign(privateKey, 'ES256', { aud: 'tidings', exp: exp2 }) })
    expect(answer).toMatchObject({ type: 'authenticated', userId: 'alice', expiresAt: exp2 * 1000 })
    await t.advance(120_000) // past the first exp + grace: still open
    expect(alice.closed).toBe(false)

    // No refresh this time: closed with 4001 after exp2 + grace.
    await t.advance((exp2 * 1000 - t.clock.now()) + 31_000)
    expect(alice.closed).toBe(true)
    expect(alice.closeCode).toBe(4001)
  })

  it('a refresh with a token for another user, or an invalid one, is refused with RT_002 and the connection keeps its identity', async () => {
    const secret = await rawSecret('HS256')
    let clock: () => number = () => NOW
    await using t = createTestHub({ authenticate: createJwtAuthenticator({ secret, algorithms: ['HS256'], now: () => clock() }) })
    clock = () => t.clock.now()
    const alice = await t.connect({ token: await sign(secret, 'HS256') })
    await expect(alice.request({ type: 'auth', v: 1, token: await sign(secret, 'HS256', { sub: 'mallory' }) })).rejects.toMatchObject({ code: 'RT_002' })
    await expect(alice.request({ type: 'auth', v: 1, token: 'a.b.c' })).rejects.toMatchObject({ code: 'RT_002' })
    const identity: Identity | undefined = (await t.hub.connections.list()).find((c) => c.id === alice.connectionId) as never
    expect(identity).toMatchObject({ userId: 'alice' })
  })
})
