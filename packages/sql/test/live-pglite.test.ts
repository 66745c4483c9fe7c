import { PGlite } from '@electric-sql/pglite'
import { Kysely } from 'kysely'
import { PGliteDialect } from 'kysely-pglite-dialect'
import { liveQuerySuite } from './live-suite.js'

// One PGlite for the file (slow to create); the provider LISTENs on it for the triggers' pg_notify.
liveQuerySuite('PGlite', async () => {
  const pglite = new PGlite('memory://')
  const kysely = new Kysely<any>({ dialect: new PGliteDialect(pglite) })
  return {
    db: { pglite },
    kysely,
    close: async () => {
      await pglite.close()
    },
  }
})
