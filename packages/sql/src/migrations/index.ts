import type { Kysely } from 'kysely'
import { type Migration, type MigrationProvider, type MigrationResultSet, Migrator } from 'kysely/migration'
import { type SchemaContext, schemaContext } from '../names.js'
import { storeMigration } from './0001_store.js'
import { clusterMigration } from './0002_cluster.js'
import { outboxMigration } from './0003_outbox.js'
import { revisionsMigration } from './0004_revisions.js'
import { limitsMigration } from './0005_limits.js'

/** A migration module: given where the tables live (schema, prefix), its `up` and `down`. */
export type MigrationFactory = (ctx: SchemaContext) => Migration

/**
 * Every migration of the package, in order (Kysely runs them sorted by name, so names start
 * with a 4-digit number). Append new ones at the end; never rename or edit a published one.
 */
export const MIGRATIONS: ReadonlyArray<readonly [name: string, migration: MigrationFactory]> = [
  ['0001_store', storeMigration],
  ['0002_cluster', clusterMigration],
  ['0003_outbox', outboxMigration],
  ['0004_revisions', revisionsMigration],
  ['0005_limits', limitsMigration],
]

/** Kysely's `MigrationProvider` over the static list above (no file system). */
export function migrationProvider(ctx: SchemaContext): MigrationProvider {
  return {
    async getMigrations() {
      const out: Record<string, Migration> = {}
      for (const [name, factory] of MIGRATIONS) out[name] = factory(ctx)
      return out
    },
  }
}

export interface MigrateOptions {
  /** PostgreSQL schema for the tables (and Kysely's migration tables). */
  readonly schema?: string | undefined
  /** Table name prefix. Default `tidings_`. */
  readonly prefix?: string | undefined
}

/** A Kysely `Migrator` for the package's tables (for `migrateDown`, `getMigrations`…). */
export function createMigrator(db: Kysely<any>, options: MigrateOptions = {}): Migrator {
  const ctx = schemaContext(options)
  return new Migrator({
    db,
    provider: migrationProvider(ctx),
    migrationTableName: `${ctx.prefix}migrations`,
    migrationLockTableName: `${ctx.prefix}migrations_lock`,
    ...(ctx.schema !== undefined ? { migrationTableSchema: ctx.schema } : {}),
  })
}

/**
 * Brings the package's tables up to date (Kysely's `Migrator.migrateToLatest`, which takes a lock,
 * so several nodes starting at once run each migration once). Throws when a migration fails.
 */
export async function migrate(db: Kysely<any>, options: MigrateOptions = {}): Promise<MigrationResultSet> {
  const result = await createMigrator(db, options).migrateToLatest()
  if (result.error) throw result.error instanceof Error ? result.error : new Error(String(result.error))
  return result
}
