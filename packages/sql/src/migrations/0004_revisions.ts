import { type Kysely, sql } from 'kysely'
import type { Migration } from 'kysely/migration'
import { type SchemaContext, tables } from '../names.js'

/**
 * Message revisions (the port's `revise` and revision events).
 *
 * - `messages.revises`: set on a revision event (a message appended by the hub when it edits or
 *   deletes an earlier one), the port's `StoredMessage.revises` as JSON text
 *   (`{"offset":…,"version":…,"deleted":true?}`), kept as appended; NULL on every other message.
 *   The revised message itself is changed in place (`data`, `version`, `edited_at`/`deleted_at`,
 *   columns of 0001).
 * - `idempotency.revises`: the same, so a repeat of a revision event answers it even once
 *   retention dropped the event from the log.
 *
 * Both columns are nullable without a default: adding them rewrites nothing.
 */
export function revisionsMigration(ctx: SchemaContext): Migration {
  const t = tables(ctx)
  return {
    async up(db: Kysely<any>) {
      await sql`ALTER TABLE ${t.messages} ADD COLUMN revises text`.execute(db)
      await sql`ALTER TABLE ${t.idempotency} ADD COLUMN revises text`.execute(db)
    },
    async down(db: Kysely<any>) {
      await sql`ALTER TABLE ${t.idempotency} DROP COLUMN IF EXISTS revises`.execute(db)
      await sql`ALTER TABLE ${t.messages} DROP COLUMN IF EXISTS revises`.execute(db)
    },
  }
}
