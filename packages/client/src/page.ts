type PageListener = (e: { persisted?: boolean }) => void

/**
 * Browsers: on `pagehide` call `release` (true: it let the connection go); on a `pageshow` from
 * the back/forward cache after a release, call `restore`. Returns the function that stops
 * watching, or undefined where there is no page.
 */
export function watchPage(release: () => boolean, restore: () => void): (() => void) | undefined {
  const target = globalThis as { addEventListener?: (type: string, fn: PageListener) => void; removeEventListener?: (type: string, fn: PageListener) => void; document?: unknown }
  if (typeof target.addEventListener !== 'function' || target.document === undefined) return undefined
  let released = false
  const hide = () => {
    if (release()) released = true
  }
  const show: PageListener = (e) => {
    if (e.persisted && released) {
      released = false
      restore()
    }
  }
  target.addEventListener('pagehide', hide)
  target.addEventListener('pageshow', show)
  return () => {
    target.removeEventListener?.('pagehide', hide)
    target.removeEventListener?.('pageshow', show)
  }
}
