import { type Kysely, sql } from 'kysely'
import type { Migration } from 'kysely/migration'
import { type SchemaContext, indexName, table } from '../names.js'

/** The tables and objects of transactional publishing (see docs/transactions.md), as SQL identifiers. */
export function outboxTables(ctx: SchemaContext) {
  return {
    outbox: table(ctx, 'outbox'),
    seq: table(ctx, 'outbox_seq'),
    commitSeq: table(ctx, 'outbox_commit_seq'),
  }
}

/** The sequence's name as a text literal for `nextval` (schema-qualified when there is a schema). */
export function outboxSequenceName(ctx: SchemaContext): string {
  const quote = (s: string) => `"${s}"`
  return ctx.schema !== undefined ? `${quote(ctx.schema)}.${quote(`${ctx.prefix}outbox_seq`)}` : quote(`${ctx.prefix}outbox_seq`)
}

/**
 * The outbox of `publish(trx, …)`.
 *
 * - `id`: insert order (bigserial); the relay's idempotency key is `outbox:<txid>:<id>` unless the app gives one.
 * - `txid`: the writing transaction (`pg_current_xact_id()`, xid8).
 * - `seq`: the commit-order key, NULL until the writing transaction commits: a deferred constraint
 *   trigger (`…outbox_commit_seq`) takes `nextval` of `…outbox_seq` (CACHE 1, so values grow in
 *   real time across sessions) at COMMIT, after the app's own statements. Rows are relayed in `seq` order.
 * - `data`: the message's data as JSON text (exactly as `JSON.stringify` gave it).
 * - `attempts`: how many times a relay took the row; above 1 the row may already be stored (a
 *   relay stopped between the store append and the delete) and is looked up before it is published.
 * - `failed_at`/`error`: a row the hub refused for good (no channel pattern, too large, invalid):
 *   kept out of the way for inspection, never retried.
 */
export function outboxMigration(ctx: SchemaContext): Migration {
  const t = outboxTables(ctx)
  return {
    async up(db: Kysely<any>) {
      if (ctx.schema !== undefined) await sql`CREATE SCHEMA IF NOT EXISTS ${sql.id(ctx.schema)}`.execute(db)
      await sql`CREATE SEQUENCE ${t.seq} AS bigint CACHE 1`.execute(db)
      await sql`CREATE TABLE ${t.outbox} (
        id bigserial PRIMARY KEY,
        txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
        seq bigint,
        channel text NOT NULL,
        event text NOT NULL,
        data text NOT NULL,
        sender text,
        idempotency_key text,
        created_at bigint NOT NULL DEFAULT (extract(epoch from clock_timestamp()) * 1000)::bigint,
        attempts integer NOT NULL DEFAULT 0,
        failed_at bigint,
        error text
      )`.execute(db)
      await sql`CREATE INDEX ${indexName(ctx, 'outbox_pending')} ON ${t.outbox} (seq) WHERE seq IS NOT NULL AND failed_at IS NULL`.execute(db)
      await sql`CREATE INDEX ${indexName(ctx, 'outbox_failed')} ON ${t.outbox} (failed_at) WHERE failed_at IS NOT NULL`.execute(db)
      await sql`CREATE FUNCTION ${t.commitSeq}() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
          UPDATE ${t.outbox} SET seq = nextval(${sql.lit(outboxSequenceName(ctx))}) WHERE id = NEW.id;
          RETURN NULL;
        END
        $fn$`.execute(db)
      await sql`CREATE CONSTRAINT TRIGGER ${sql.id(`${ctx.prefix}outbox_commit_seq`)} AFTER INSERT ON ${t.outbox}
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ${t.commitSeq}()`.execute(db)
    },
    async down(db: Kysely<any>) {
      await sql`DROP TABLE IF EXISTS ${t.outbox}`.execute(db)
      await sql`DROP FUNCTION IF EXISTS ${t.commitSeq}()`.execute(db)
      await sql`DROP SEQUENCE IF EXISTS ${t.seq}`.execute(db)
    },
  }
}
