export { type MigrateOptions, type MigrationFactory, MIGRATIONS, createMigrator, migrate, migrationProvider } from './migrations/index.js'
export { DEFAULT_PREFIX, type SchemaContext, schemaContext, table, tables } from './names.js'
