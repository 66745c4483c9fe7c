import { type Kysely, sql } from 'kysely'
import type { Migration } from 'kysely/migration'
import { type SchemaContext, indexName, tables } from '../names.js'

/**
 * The store's tables, in the shapes of seed 002 (channels, subscriptions, the message log, the
 * offline queue) plus receipts per message (seed 004). Offsets, times and sizes are bigint
 * (times in ms since the epoch, as the hub's clock gives them).
 *
 * - `store`: one row, the store's identity (a random id, new after `reset()`): every channel
 *   epoch is `<identity>.<hash of the name>`, so a lost history never comes back in its old epoch.
 * - `channels`: name, kind, scope, entity, entity id, created by, created at, last activity,
 *   metadata (seed 002), and the log's state: epoch, `top` (newest offset), `low` (offsets up to
 *   it were dropped by retention), `purged` (rows up to it are deleted; those between `purged`
 *   and `low` wait for the purge or the archive), `bytes` (sizes of the retained messages, measured at append)
 *   and the retention of the last append.
 * - `messages`: the log; `seq` is the message's offset (unique per channel). `data` is jsonb;
 *   the rare value jsonb cannot hold (a string with U+0000) is kept as JSON text in `data_json`.
 *   `expires_at` is the offline queue's expiry (append time + the channel's max age), `version`,
 *   `edited_at`, `deleted_at` follow edits and deletions.
 * - `idempotency`: publisher keys per channel with the time they were seen (they outlive the
 *   message they name, so a late repeat still answers the first offset).
 * - `subscriptions`: a user's membership of a channel (status) and consumer cursor: the last
 *   seen offset and the epoch it was committed in (the offline queue's "delivered to").
 * - `receipts`: per message and user, when it was delivered and read.
 */
export function storeMigration(ctx: SchemaContext): Migration {
  const t = tables(ctx)
  return {
    async up(db: Kysely<any>) {
      if (ctx.schema !== undefined) await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(ctx.schema)}`.execute(db)
      await sql`CREATE TABLE ${t.store} (
        id integer PRIMARY KEY,
        identity text NOT NULL,
        created_at bigint NOT NULL
      )`.execute(db)
      await sql`INSERT INTO ${t.store} (id, identity, created_at)
        VALUES (1, substr(md5(random()::text || clock_timestamp()::text), 1, 16), (extract(epoch from clock_timestamp()) * 1000)::bigint)`.execute(db)
      await sql`CREATE TABLE ${t.channels} (
        name text PRIMARY KEY,
        kind text,
        scope text,
        entity text,
        entity_id text,
        created_by text,
        created_at bigint NOT NULL,
        last_activity bigint NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
        epoch text NOT NULL,
        top bigint NOT NULL DEFAULT 0,
        low bigint NOT NULL DEFAULT 0,
        purged bigint NOT NULL DEFAULT 0,
        bytes bigint NOT NULL DEFAULT 0,
        max_count bigint,
        max_age_ms bigint,
        max_bytes bigint
      )`.execute(db)
      await sql`CREATE INDEX ${indexName(ctx, 'channels_entity')} ON ${t.channels} (entity, entity_id)`.execute(db)
      await sql`CREATE TABLE ${t.messages} (
        channel text NOT NULL,
        seq bigint NOT NULL,
        epoch text NOT NULL,
        id text NOT NULL,
        event text NOT NULL,
        data jsonb,
        data_json text,
        sender text,
        ts double precision NOT NULL,
        exclude text,
        idempotency_key text,
        size integer NOT NULL,
        expires_at bigint,
        version integer NOT NULL DEFAULT 1,
        edited_at bigint,
        deleted_at bigint,
        PRIMARY KEY (channel, seq)
      )`.execute(db)
      // No index on sender: it would cost every append an index insertion for the sake of the rare
      // erasure (eraseUser scans). An app erasing often on a large history can add one.
      await sql`CREATE TABLE ${t.idempotency} (
        channel text NOT NULL,
        key text NOT NULL,
        seq bigint NOT NULL,
        id text NOT NULL,
        event text NOT NULL,
        sender text,
        ts double precision NOT NULL,
        at bigint NOT NULL,
        PRIMARY KEY (channel, key)
      )`.execute(db)
      await sql`CREATE INDEX ${indexName(ctx, 'idempotency_at')} ON ${t.idempotency} (at)`.execute(db)
      await sql`CREATE TABLE ${t.subscriptions} (
        channel text NOT NULL,
        user_id text NOT NULL,
        last_seen_offset bigint NOT NULL DEFAULT 0,
        epoch text,
        status text NOT NULL DEFAULT 'active',
        subscribed_at bigint NOT NULL,
        updated_at bigint NOT NULL,
        PRIMARY KEY (channel, user_id)
      )`.execute(db)
      await sql`CREATE INDEX ${indexName(ctx, 'subscriptions_user')} ON ${t.subscriptions} (user_id)`.execute(db)
      await sql`CREATE TABLE ${t.receipts} (
        channel text NOT NULL,
        seq bigint NOT NULL,
        user_id text NOT NULL,
        delivered_at bigint,
        read_at bigint,
        PRIMARY KEY (channel, seq, user_id)
      )`.execute(db)
      await sql`CREATE INDEX ${indexName(ctx, 'receipts_user')} ON ${t.receipts} (user_id)`.execute(db)
    },
    async down(db: Kysely<any>) {
      for (const name of [t.receipts, t.subscriptions, t.idempotency, t.messages, t.channels, t.store]) await sql`DROP TABLE IF EXISTS ${name}`.execute(db)
    },
  }
}
