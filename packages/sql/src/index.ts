export { type MigrateOptions, type MigrationFactory, MIGRATIONS, createMigrator, migrate, migrationProvider } from './migrations/index.js'
export { DEFAULT_PREFIX, type SchemaContext, schemaContext, table, tables } from './names.js'
export { type Connection, type SqlDatabase, connect } from './connect.js'
export {
  type ChannelDescription,
  type EraseResult,
  type MessageVersion,
  type Receipt,
  type SqlStore,
  type SqlStoreOptions,
  type SweepResult,
  type UserChannel,
  createPGliteStore,
  createSqlStore,
  describeChannelName,
} from './store.js'
export { type PostgresBroker, type PostgresBrokerHealth, type PostgresBrokerOptions, type PostgresBrokerStats, PostgresBrokerError, createPostgresBroker } from './broker.js'
export { type PostgresPresenceStore, type PostgresPresenceStoreOptions, createPostgresPresenceStore } from './presence.js'
export { type PostgresLimitStore, type PostgresLimitStoreOptions, createPostgresLimitStore } from './limits.js'
export type { DatabaseStore } from './lifecycle.js'
export { type ClusterTables, clusterMigration, clusterTables, ensureClusterTables } from './migrations/0002_cluster.js'
export { NOTIFY_PAYLOAD_LIMIT, notifyChannel } from './notify.js'
export { type OutboxLocation, type PgQueryable, type TxPublishOptions, type TxPublished, outboxNotifyChannel, publish, publishWithClient } from './publish.js'
export { type OutboxRelay, type OutboxRelayOptions, type OutboxRelayStats, createOutboxRelay } from './outbox.js'
export { outboxMigration, outboxTables } from './migrations/0003_outbox.js'
export { type LiveCollection, type LiveRowRule, type LiveQueries, type LiveQueriesOptions, type LiveQueriesStats, type LiveRowChange, LIVE_NOTIFY_CHANNEL, createLiveQueries } from './live/index.js'
export { type SqliteStore, type SqliteStoreDatabase, type SqliteStoreOptions, type SqliteSweepResult, SQLITE_DEFAULT_PREFIX, SQLITE_MIGRATIONS, createSqliteMigrator, createSqliteStore, migrateSqlite, sqliteStoreMigration } from './sqlite/index.js'
