import { RealtimeError, channelNameSchema } from '@tidings/protocol'

/** Who may do something in a room: anyone the channel rule admits, members only, or members with one of these roles. */
export type RoomAccess = 'anyone' | 'members' | readonly string[]

export interface RoomOptions {
  readonly metadata?: Record<string, unknown>
  /** Members and their roles: `{ alice: 'owner', bob: 'member' }`, or a list (all `'member'`). */
  readonly members?: Readonly<Record<string, string>> | readonly string[]
  /** Most distinct users subscribed at once (`RT_008` past it). */
  readonly capacity?: number
  readonly permissions?: { readonly subscribe?: RoomAccess; readonly publish?: RoomAccess }
  /** Delete the room when its last occupant leaves. Default: true for rooms created on demand. */
  readonly deleteWhenEmpty?: boolean
}

/** A room as the API returns it (a copy). */
export interface RoomInfo {
  readonly channel: string
  readonly metadata: Readonly<Record<string, unknown>>
  readonly members: Readonly<Record<string, string>>
  readonly capacity: number | undefined
  readonly permissions: { readonly subscribe: RoomAccess; readonly publish: RoomAccess }
  readonly createdAt: number
  readonly onDemand: boolean
  readonly deleteWhenEmpty: boolean
}

export class Room {
  metadata: Record<string, unknown>
  readonly members: Map<string, string>
  capacity: number | undefined
  permissions: { subscribe: RoomAccess; publish: RoomAccess }
  deleteWhenEmpty: boolean
  /** Bumped on every change of members, roles, metadata or permissions (rules see a room by revision). */
  revision = 0

  constructor(
    readonly channel: string,
    options: RoomOptions,
    readonly createdAt: number,
    readonly onDemand: boolean,
    defaultAccess: RoomAccess,
  ) {
    this.metadata = { ...options.metadata }
    this.members = new Map(
      Array.isArray(options.members)
        ? (options.members as readonly string[]).map((m) => [m, 'member'] as const)
        : Object.entries(options.members ?? {}),
    )
    this.capacity = options.capacity
    this.permissions = { subscribe: options.permissions?.subscribe ?? defaultAccess, publish: options.permissions?.publish ?? defaultAccess }
    this.deleteWhenEmpty = options.deleteWhenEmpty ?? onDemand
  }

  allows(action: 'subscribe' | 'publish', userId: string | undefined): boolean {
    const access = this.permissions[action]
    if (access === 'anyone') return true
    if (userId === undefined) return false
    const role = this.members.get(userId)
    if (role === undefined) return false
    return access === 'members' || access.includes(role)
  }

  info(): RoomInfo {
    return {
      channel: this.channel,
      metadata: { ...this.metadata },
      members: Object.fromEntries(this.members),
      capacity: this.capacity,
      permissions: { ...this.permissions },
      createdAt: this.createdAt,
      onDemand: this.onDemand,
      deleteWhenEmpty: this.deleteWhenEmpty,
    }
  }
}

/** Room administration, as `hub.rooms`. Rooms are kept by the hub node that created them. */
export interface Rooms {
  /** Create a room for a channel. Throws `RT_007` for a bad name and an Error if it exists. */
  create(channel: string, options?: RoomOptions): RoomInfo
  get(channel: string): RoomInfo | undefined
  list(): RoomInfo[]
  update(channel: string, patch: Pick<RoomOptions, 'metadata' | 'capacity' | 'permissions' | 'deleteWhenEmpty'>): RoomInfo
  addMember(channel: string, userId: string, role?: string): RoomInfo
  /** Remove a member; their connections are unsubscribed if the room admits members only. */
  removeMember(channel: string, userId: string): RoomInfo
  /** Delete the room: occupants are told (`unsubscribed`, reason `room-deleted`) and unsubscribed. */
  delete(channel: string): boolean
}

export interface RoomHooks {
  now(): number
  /** Default access for a room on this channel (members-only for `private:room-*`). */
  defaultAccess(channel: string): RoomAccess
  created(room: Room): void
  deleted(room: Room): void
  memberRemoved(room: Room, userId: string): void
  /** Membership, roles, metadata or permissions changed (or the room was created): rights are decided again. */
  changed(room: Room): void
}

export class RoomRegistry implements Rooms {
  readonly rooms = new Map<string, Room>()

  constructor(private readonly hooks: RoomHooks) {}

  open(channel: string, options: RoomOptions, onDemand: boolean): Room {
    const room = new Room(channel, options, this.hooks.now(), onDemand, this.hooks.defaultAccess(channel))
    this.rooms.set(channel, room)
    this.hooks.created(room)
    return room
  }

  create(channel: string, options: RoomOptions = {}): RoomInfo {
    if (!channelNameSchema.safeParse(channel).success) throw new RealtimeError('RT_007', `invalid channel name '${channel}'`)
    if (this.rooms.has(channel)) throw new Error(`room '${channel}' already exists`)
    const room = this.open(channel, options, false)
    // Subscribers of the channel from before the room existed are decided again (rules read `data`).
    this.hooks.changed(room)
    return room.info()
  }

  get(channel: string): RoomInfo | undefined {
    return this.rooms.get(channel)?.info()
  }

  list(): RoomInfo[] {
    return [...this.rooms.values()].map((r) => r.info())
  }

  private must(channel: string): Room {
    const room = this.rooms.get(channel)
    if (!room) throw new RealtimeError('RT_004', `room '${channel}' does not exist`)
    return room
  }

  update(channel: string, patch: Pick<RoomOptions, 'metadata' | 'capacity' | 'permissions' | 'deleteWhenEmpty'>): RoomInfo {
    const room = this.must(channel)
    if (patch.metadata) room.metadata = { ...patch.metadata }
    if (patch.capacity !== undefined) room.capacity = patch.capacity
    if (patch.permissions) room.permissions = { ...room.permissions, ...patch.permissions }
    if (patch.deleteWhenEmpty !== undefined) room.deleteWhenEmpty = patch.deleteWhenEmpty
    room.revision++
    this.hooks.changed(room)
    return room.info()
  }

  addMember(channel: string, userId: string, role = 'member'): RoomInfo {
    const room = this.must(channel)
    if (room.members.get(userId) === role) return room.info()
    room.members.set(userId, role)
    room.revision++
    this.hooks.changed(room)
    return room.info()
  }

  removeMember(channel: string, userId: string): RoomInfo {
    const room = this.must(channel)
    if (room.members.delete(userId)) {
      room.revision++
      this.hooks.memberRemoved(room, userId)
    }
    return room.info()
  }

  delete(channel: string): boolean {
    const room = this.rooms.get(channel)
    if (!room) return false
    this.rooms.delete(channel)
    this.hooks.deleted(room)
    return true
  }
}
