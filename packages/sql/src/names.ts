import { type RawBuilder, sql } from 'kysely'

/** Where the tables live: an optional PostgreSQL schema and a prefix for every table name. */
export interface SchemaContext {
  /** PostgreSQL schema holding the tables (created by the first migration when absent). Default: the connection's search path (usually `public`). */
  readonly schema?: string | undefined
  /** Prefix of every table name. Default `tidings_`. */
  readonly prefix: string
}

export const DEFAULT_PREFIX = 'tidings_'

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/

/** Checks a schema name or prefix (they are spliced into DDL as identifiers). */
export function schemaContext(options: { schema?: string | undefined; prefix?: string | undefined } = {}): SchemaContext {
  const prefix = options.prefix ?? DEFAULT_PREFIX
  if (prefix !== '' && !IDENT.test(prefix)) throw new TypeError(`@tidings/sql: prefix ${JSON.stringify(prefix)} must be letters, digits and underscores`)
  if (options.schema !== undefined && !IDENT.test(options.schema)) throw new TypeError(`@tidings/sql: schema ${JSON.stringify(options.schema)} must be letters, digits and underscores`)
  return { schema: options.schema, prefix }
}

/** The table (or index) `name` with the context's prefix and schema, as an SQL identifier. */
export function table(ctx: SchemaContext, name: string): RawBuilder<unknown> {
  const full = `${ctx.prefix}${name}`
  return ctx.schema !== undefined ? sql.id(ctx.schema, full) : sql.id(full)
}

/** An index name (never schema-qualified in CREATE INDEX). */
export function indexName(ctx: SchemaContext, name: string): RawBuilder<unknown> {
  return sql.id(`${ctx.prefix}${name}`)
}

/** The tables of the store, as SQL identifiers. */
export function tables(ctx: SchemaContext) {
  return {
    store: table(ctx, 'store'),
    channels: table(ctx, 'channels'),
    messages: table(ctx, 'messages'),
    idempotency: table(ctx, 'idempotency'),
    subscriptions: table(ctx, 'subscriptions'),
    receipts: table(ctx, 'receipts'),
  }
}
