/** Channel membership for the raw `ws` servers (which have no protocol): fixed by the connection URL. */
export const MAIN = 'main'
const EMPTY = new Set<never>()

/** `?channels=N` in an upgrade URL: the connection is in `bench-0` … `bench-(N-1)`. */
export function channelsOf(url: string | undefined): number {
  const q = url?.indexOf('?') ?? -1
  if (q < 0) return 0
  const n = Number(new URLSearchParams(url!.slice(q + 1)).get('channels') ?? 0)
  return Number.isInteger(n) && n > 0 && n <= 1000 ? n : 0
}

export class Rooms<T> {
  private readonly map = new Map<string, Set<T>>()
  join(member: T, n: number): void {
    for (let i = 0; i < n; i++) {
      const name = `bench-${i}`
      let set = this.map.get(name)
      if (!set) this.map.set(name, (set = new Set()))
      set.add(member)
    }
  }
  leave(member: T, n: number): void {
    for (let i = 0; i < n; i++) this.map.get(`bench-${i}`)?.delete(member)
  }
  get(name: string): ReadonlySet<T> {
    return this.map.get(name) ?? (EMPTY as ReadonlySet<T>)
  }
}
