import { type EncryptedEnvelope, RealtimeError, envelopeAad, isEncryptedEnvelope } from '@tidings/protocol'

/**
 * A WebCrypto key (the global `CryptoKey` of browsers and Node 20), described by its shape so
 * that the types need no DOM library.
 */
export interface WebCryptoKey {
  readonly algorithm: { readonly name: string }
  readonly type: string
  readonly extractable: boolean
  readonly usages: readonly string[]
}

/** What the client uses of `crypto.subtle`. */
interface Subtle {
  importKey(format: 'raw', data: Uint8Array, algorithm: 'AES-GCM', extractable: boolean, usages: string[]): Promise<WebCryptoKey>
  encrypt(algorithm: AesGcm, key: WebCryptoKey, data: Uint8Array): Promise<ArrayBuffer>
  decrypt(algorithm: AesGcm, key: WebCryptoKey, data: Uint8Array): Promise<ArrayBuffer>
}
type AesGcm = { name: 'AES-GCM'; iv: Uint8Array; additionalData: Uint8Array }
type WebCrypto = { subtle?: Subtle; getRandomValues<T extends Uint8Array>(array: T): T }

/**
 * A channel key: an id (it travels with every message it seals, so keys can rotate) and the
 * key itself: a WebCrypto AES-GCM `CryptoKey`, 32 raw bytes, or those bytes in base64url.
 */
export interface ChannelKey {
  readonly id: string
  readonly key: WebCryptoKey | Uint8Array | string
}

/**
 * End-to-end encryption of a channel's messages (AES-256-GCM through WebCrypto). `key(kid)`
 * gives the key with that id (to read a message sealed with it); `key()` without an id gives
 * the current one (to send). Without `key`, keys come only with the channel's `auth` result.
 */
export interface ChannelEncryption {
  readonly key?: ((kid?: string) => ChannelKey | Promise<ChannelKey>) | undefined
}

/** Why a message of an encrypted channel was not handed to listeners. */
export type DecryptFailure = 'not-encrypted' | 'unknown-key' | 'authentication-failed' | 'bad-plaintext'

interface ReadyKey {
  readonly id: string
  readonly key: WebCryptoKey
}

const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: true })
/** A key id that could not be had is not asked for again before this (ms). */
const NEGATIVE_TTL = 5000
/** Most key ids remembered per channel. */
const MAX_KEYS = 64

const webCrypto = (): WebCrypto | undefined => (globalThis as { crypto?: WebCrypto }).crypto

function subtle(): Subtle {
  const s = webCrypto()?.subtle
  if (!s) throw new RealtimeError('RT_007', 'end-to-end encryption needs WebCrypto (crypto.subtle; browsers: https or localhost only)')
  return s
}

export function toBase64url(bytes: Uint8Array): string {
  let s = ''
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

export function fromBase64url(text: string): Uint8Array {
  const s = atob(text.replace(/-/g, '+').replace(/_/g, '/'))
  const out = new Uint8Array(s.length)
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i)
  return out
}

async function importKey(k: ChannelKey): Promise<ReadyKey> {
  if (typeof k?.id !== 'string' || k.id.length === 0 || k.id.length > 128) throw new TypeError('a channel key needs an id of 1 to 128 characters')
  let raw = k.key
  if (typeof raw === 'string') raw = fromBase64url(raw)
  if (ArrayBuffer.isView(raw)) {
    if (raw.byteLength !== 32) throw new TypeError(`channel key '${k.id}' has ${raw.byteLength} bytes: AES-256 needs 32`)
    return { id: k.id, key: await subtle().importKey('raw', raw as Uint8Array, 'AES-GCM', false, ['encrypt', 'decrypt']) }
  }
  if (raw?.algorithm?.name !== 'AES-GCM') throw new TypeError(`channel key '${k.id}' is not an AES-GCM CryptoKey`)
  return { id: k.id, key: raw }
}

/** A message that could not be opened, and why. */
export class OpenError extends Error {
  constructor(
    readonly reason: DecryptFailure,
    message: string,
  ) {
    super(message)
  }
}

/**
 * The keys of one channel: imported once, fetched by id through `key(kid)` when a message names
 * one not seen yet (concurrent fetches of an id share one call), and the current key for sends.
 */
export class Keyring {
  private readonly keys = new Map<string, Promise<ReadyKey>>()
  private readonly failedAt = new Map<string, number>()
  private current: Promise<ReadyKey> | undefined
  private fetchingCurrent: Promise<ReadyKey> | undefined

  constructor(
    private readonly source: {
      /** The app's key function, if any. */
      key(): ChannelEncryption['key']
      /** Call the channel's `auth` function (for the keys that come with it); undefined when there is none. */
      authorize(): Promise<unknown> | undefined
    },
  ) {}

  /** A key handed over (by the `auth` result, `setKey`, or `key()`); `current`: new sends use it. */
  add(k: ChannelKey, current: boolean): Promise<ReadyKey> {
    const ready = importKey(k)
    ready.catch(() => {
      // Not a key: forgotten, so it is neither used nor standing in for a good one.
      if (this.current === ready) this.current = undefined
      if (this.keys.get(k?.id) === ready) this.keys.delete(k.id)
    })
    this.remember(k?.id, ready)
    if (current) this.current = ready
    return ready
  }

  /** Forget the current key: the next send asks for it again (after the app rotated keys). */
  stale(): void {
    this.current = undefined
  }

  /** The key new messages are sealed with. */
  forSending(): Promise<ReadyKey> {
    if (this.current) return this.current
    this.fetchingCurrent ??= this.fetchCurrent().finally(() => (this.fetchingCurrent = undefined))
    return this.fetchingCurrent
  }

  /** The key with this id, fetched when unknown; undefined when it cannot be had. */
  async forReading(kid: string): Promise<ReadyKey | undefined> {
    const known = this.keys.get(kid)
    if (known) return known.catch(() => undefined)
    const failed = this.failedAt.get(kid)
    if (failed !== undefined && Date.now() - failed < NEGATIVE_TTL) return undefined
    const fn = this.source.key()
    if (fn) {
      const p = Promise.resolve()
        .then(() => fn(kid))
        .then(async (k) => {
          if (k?.id !== kid) throw new Error(`key('${kid}') gave key '${k?.id}'`)
          const ready = await importKey(k)
          // A real key id this client had not seen: keys may have rotated, so the current key is
          // asked for again before the next send. (A made-up id, which the app cannot give, changes nothing.)
          this.current = undefined
          return ready
        })
      this.remember(kid, p)
      return p.catch(() => {
        this.fail(kid, p)
        return undefined
      })
    }
    // No key function: the auth result may carry it (a fresh grant holds the current key).
    const authorizing = this.source.authorize()
    if (authorizing) {
      await authorizing.catch(() => {})
      const now = this.keys.get(kid)
      if (now) return now.catch(() => undefined)
    }
    this.fail(kid, undefined)
    return undefined
  }

  private async fetchCurrent(): Promise<ReadyKey> {
    const fn = this.source.key()
    if (fn) {
      return this.add(await fn(), true)
    }
    const authorizing = this.source.authorize()
    if (authorizing) {
      await authorizing
      if (this.current) return this.current
    }
    throw new RealtimeError('RT_007', 'no key to encrypt with: give the channel encryption.key, or return { token, key } from its auth function')
  }

  private remember(kid: string, p: Promise<ReadyKey>): void {
    this.keys.delete(kid)
    this.keys.set(kid, p)
    this.failedAt.delete(kid)
    if (this.keys.size > MAX_KEYS) this.keys.delete(this.keys.keys().next().value!)
  }

  private fail(kid: string, p: Promise<ReadyKey> | undefined): void {
    if (p && this.keys.get(kid) === p) this.keys.delete(kid)
    this.failedAt.set(kid, Date.now())
    if (this.failedAt.size > MAX_KEYS) this.failedAt.delete(this.failedAt.keys().next().value!)
  }
}

/** Seal a message's data: AES-256-GCM, a fresh 12-byte IV, additional data `<channel>\n<event>`. */
export async function seal(key: ReadyKey, channel: string, event: string, data: unknown): Promise<EncryptedEnvelope> {
  const json = data === undefined ? undefined : JSON.stringify(data)
  const plaintext = json === undefined ? new Uint8Array(0) : encoder.encode(json)
  const iv = webCrypto()!.getRandomValues(new Uint8Array(12))
  const ct = await subtle().encrypt({ name: 'AES-GCM', iv, additionalData: encoder.encode(envelopeAad(channel, event)) }, key.key, plaintext)
  return { e2e: 1, kid: key.id, iv: toBase64url(iv), ct: toBase64url(new Uint8Array(ct)) }
}

/** Open a message's data sealed for this channel and event; throws `OpenError` with the reason. */
export async function open(keys: Keyring, channel: string, event: string, data: unknown): Promise<unknown> {
  if (!isEncryptedEnvelope(data)) throw new OpenError('not-encrypted', 'the message is not an encrypted envelope')
  const key = await keys.forReading(data.kid)
  if (!key) throw new OpenError('unknown-key', `no key '${data.kid}' for this channel`)
  let plaintext: ArrayBuffer
  try {
    plaintext = await subtle().decrypt(
      { name: 'AES-GCM', iv: fromBase64url(data.iv), additionalData: encoder.encode(envelopeAad(channel, event)) },
      key.key,
      fromBase64url(data.ct),
    )
  } catch {
    throw new OpenError('authentication-failed', `key '${data.kid}' does not open it: tampered with, another key, or sealed for another channel or event`)
  }
  if (plaintext.byteLength === 0) return undefined
  try {
    return JSON.parse(decoder.decode(plaintext))
  } catch {
    throw new OpenError('bad-plaintext', 'the decrypted message is not JSON')
  }
}
