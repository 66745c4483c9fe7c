import { z } from 'zod'
import { broadcastBody, broadcastToChannelBody, editMessageBody, kickBody, SEARCH_LIMIT_MAX, SEARCH_QUERY_MAX, USER_CHANNELS_LIMIT_MAX } from './admin.js'

/** The OpenAPI 3.1 document of the admin API, served at `{prefix}/openapi.json`. Request bodies come from the same zod schemas that validate them. */
export function openApiDocument(prefix: string): Record<string, unknown> {
  const json = (schema: z.ZodType) => ({ 'application/json': { schema: z.toJSONSchema(schema, { unrepresentable: 'any' }) } })
  const error = { description: 'An error: `{ type: "error", code: "RT_00x", message }`', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }
  const channel = { name: 'id', in: 'path', required: true, description: 'Channel name, URL-encoded (e.g. `public%3Anews`)', schema: { type: 'string' } }
  const responses = (ok: Record<string, unknown>) => ({ ...ok, 400: error, 401: error, 403: error, 404: error, 413: error })
  const okJson = (description: string) => ({ 200: { description, content: { 'application/json': { schema: { type: 'object' } } } } })
  const offset = { name: 'offset', in: 'path', required: true, description: "The message's offset in the channel (digits only, 1 to 2^53 − 1)", schema: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } }
  const userId = { name: 'id', in: 'path', required: true, description: 'User id, URL-encoded (1 to 256 characters; `.` and `..` cannot be named in a path)', schema: { type: 'string', minLength: 1, maxLength: 256 } }
  const revision = (description: string) => ({
    200: { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/RevisionResult' } } } },
  })
  return {
    openapi: '3.1.0',
    info: { title: 'Tidings admin API', version: '1', description: 'Server-side control of a Tidings hub. Every operation needs the API key (`x-api-key` header or `Authorization: Bearer`).' },
    servers: [{ url: prefix }],
    security: [{ apiKey: [] }, { bearer: [] }],
    components: {
      securitySchemes: { apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' }, bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['type', 'code', 'message'],
          properties: { type: { const: 'error' }, code: { type: 'string', pattern: '^RT_00[1-9]$' }, message: { type: 'string' }, details: { type: 'object' } },
        },
        RevisionResult: {
          type: 'object',
          required: ['offset', 'version', 'deleted', 'revision', 'messageId', 'recipients'],
          properties: {
            offset: { type: 'integer', description: "The revised message's offset" },
            version: { type: 'integer', minimum: 2, description: 'Its version now (2 after the first revision)' },
            deleted: { type: 'boolean' },
            revision: { type: 'integer', description: 'The offset of the revision event in the channel log' },
            messageId: { type: 'string', description: "The revision event's message id" },
            recipients: { type: 'integer', description: 'Connections on this node the revision event was written or queued to' },
          },
        },
        StoredMessage: {
          type: 'object',
          required: ['id', 'channel', 'offset', 'event', 'data', 'timestamp'],
          properties: {
            id: { type: 'string' },
            channel: { type: 'string' },
            offset: { type: 'integer' },
            event: { type: 'string' },
            data: {},
            sender: { type: 'string' },
            timestamp: { type: 'number' },
            version: { type: 'integer', minimum: 2, description: 'Set once the message was revised' },
            deleted: { const: true, description: 'Set once the message was deleted (data is then null)' },
            revises: { type: 'object', description: 'Set on a revision event', properties: { offset: { type: 'integer' }, version: { type: 'integer' }, deleted: { const: true } } },
          },
        },
        ConsumerChannel: {
          type: 'object',
          required: ['name', 'lastSeenOffset', 'top', 'unread', 'lastActivity'],
          properties: {
            name: { type: 'string' },
            lastSeenOffset: { type: 'integer', description: "The user's cursor (0 when it is of an earlier epoch)" },
            top: { type: 'integer', description: "The channel's newest offset" },
            unread: { type: 'integer', description: 'Retained messages after the cursor' },
            lastActivity: { type: ['number', 'null'], description: 'Time of the newest append (ms)' },
            kind: { type: ['string', 'null'] },
            activeUsers: { type: 'integer' },
          },
        },
      },
    },
    paths: {
      '/channels/{id}/broadcast': {
        post: { summary: 'Publish a message on a channel', parameters: [channel], requestBody: { required: true, content: json(broadcastToChannelBody) }, responses: responses(okJson('`{ messageId, offset, duplicate, recipients }`')) },
      },
      '/channels/{id}/presence': { get: { summary: 'Who is in a presence channel', parameters: [channel], responses: responses(okJson('`{ users, count }`')) } },
      '/channels/{id}/kick': {
        post: { summary: 'Unsubscribe a user from a channel (every node)', parameters: [channel], requestBody: { required: true, content: json(kickBody) }, responses: responses(okJson('`{ removed }`: subscriptions ended on every node')) },
      },
      '/channels/{id}/history': {
        get: {
          summary: 'Read a channel log',
          parameters: [channel, { name: 'after', in: 'query', schema: { type: 'integer', minimum: 0 } }, { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 1000 } }],
          responses: responses(okJson('`{ epoch, messages, top, complete }`')),
        },
      },
      '/channels/{id}/messages/{offset}': {
        patch: {
          summary: 'Edit a stored message (its next version); a revision event goes to the subscribers',
          description:
            'Scope `publish`. With `by`, only that user\'s own message (403 `RT_003` otherwise). 404 `RT_004`: the message is not retained or already deleted; 400 `RT_007`: a bad offset or body, a body that is not `application/json`, a channel that keeps no history or a store without revisions, data failing the event schema; 413 `RT_005`: the body or the data too large.',
          parameters: [channel, offset],
          requestBody: { required: true, content: json(editMessageBody) },
          responses: responses(revision('`{ offset, version, deleted: false, revision, messageId, recipients }`')),
        },
        delete: {
          summary: 'Delete a stored message (data null, its offset kept as a tombstone); a revision event goes to the subscribers',
          description: 'Scope `publish`. With `by`, only that user\'s own message (403 `RT_003` otherwise). 404 `RT_004`: not retained or already deleted; 400 `RT_007`: a bad offset, a channel that keeps no history or a store without revisions.',
          parameters: [channel, offset, { name: 'by', in: 'query', description: 'Delete on behalf of this user: only its own message', schema: { type: 'string', minLength: 1, maxLength: 256 } }],
          responses: responses(revision('`{ offset, version, deleted: true, revision, messageId, recipients }`')),
        },
      },
      '/channels/{id}/search': {
        get: {
          summary: "Full-text search of a channel's retained history, newest first (deleted messages and revision events never match)",
          description: 'Scope `read`. 400 `RT_007` for a missing or oversized `q`, a bad `limit` or `before`, an end-to-end encrypted channel or a store without search; 404 `RT_004` for a channel no pattern matches or one that keeps no history (as the history route).',
          parameters: [
            channel,
            { name: 'q', in: 'query', required: true, description: 'Words to find (all of them, any case)', schema: { type: 'string', minLength: 1, maxLength: SEARCH_QUERY_MAX } },
            { name: 'limit', in: 'query', description: 'Default 20', schema: { type: 'integer', minimum: 1, maximum: SEARCH_LIMIT_MAX } },
            { name: 'before', in: 'query', description: 'Only offsets below this (the next page)', schema: { type: 'integer', minimum: 1 } },
          ],
          responses: responses({
            200: { description: '`{ messages }`: messages as the history route answers them', content: { 'application/json': { schema: { type: 'object', required: ['messages'], properties: { messages: { type: 'array', items: { $ref: '#/components/schemas/StoredMessage' } } } } } } },
          }),
        },
      },
      '/users/{id}/channels': {
        get: {
          summary: "A user's channels (those keeping a cursor for it: offline queues it subscribed to), with unread counts, most recently active first",
          description: 'Scope `read`. 400 `RT_007` for a bad user id or `limit`, or a store without a channel list.',
          parameters: [userId, { name: 'limit', in: 'query', description: 'Default 100', schema: { type: 'integer', minimum: 1, maximum: USER_CHANNELS_LIMIT_MAX } }],
          responses: responses({
            200: { description: '`{ channels }`', content: { 'application/json': { schema: { type: 'object', required: ['channels'], properties: { channels: { type: 'array', items: { $ref: '#/components/schemas/ConsumerChannel' } } } } } } },
          }),
        },
      },
      '/users/{id}/erase': {
        post: {
          summary: 'Erase one user (GDPR): its messages become tombstones, its cursors and idempotency records go, every node forgets its analytics (`hub.eraseUser`)',
          description: 'Scope `admin`. No body. 400 `RT_007` for a bad user id or a store that cannot erase (the Redis store). Connections stay open: `DELETE /users/{id}/connections` first.',
          parameters: [userId],
          responses: responses({
            200: {
              description: 'What was erased',
              content: { 'application/json': { schema: { type: 'object', required: ['messages', 'cursors', 'keys'], properties: { messages: { type: 'integer' }, cursors: { type: 'integer' }, keys: { type: 'integer' } } } } },
            },
          }),
        },
      },
      '/broadcast': { post: { summary: 'Broadcast to all, users, connections or channels', requestBody: { required: true, content: json(broadcastBody) }, responses: responses(okJson('`{ messageIds, recipients }`')) } },
      '/connections': {
        get: {
          summary: 'List connections on every node (each with its nodeId), at most `limit` (default 1000)',
          parameters: [{ name: 'userId', in: 'query', schema: { type: 'string' } }, { name: 'channel', in: 'query', schema: { type: 'string' } }, { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 10000 } }],
          responses: responses(okJson('`{ connections, count }`')),
        },
      },
      '/connections/{id}': { delete: { summary: 'Disconnect one connection, on whichever node holds it', parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: responses({ 204: { description: 'Disconnected' } }) } },
      '/users/{id}/connections': { delete: { summary: "Disconnect every connection of a user (every node)", parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }], responses: responses(okJson('`{ disconnected }`')) } },
      '/metrics': {
        get: {
          summary: 'Hub metrics: Prometheus text for a scrape (the `metrics.token` bearer token, or any request when `metrics.open`), else the admin JSON snapshot of `hub.metrics()` (or Prometheus text with `?format=prometheus`)',
          parameters: [{ name: 'format', in: 'query', schema: { enum: ['json', 'prometheus'] } }],
          responses: responses({
            200: {
              description: 'Prometheus text format 0.0.4 (metric names and labels: docs/operations.md), or a JSON metrics snapshot',
              content: { 'text/plain': { schema: { type: 'string' } }, 'application/json': { schema: { type: 'object' } } },
            },
          }),
        },
      },
      '/analytics': {
        get: {
          summary: "This node's analytics (`hub.analytics()`): peak connections with the time, channel activity and popular channels, usage per hour of day (UTC), engagement per user. Scope `read`",
          parameters: [{ name: 'limit', in: 'query', description: 'Entries per list (default 10)', schema: { type: 'integer', minimum: 1, maximum: 1000 } }],
          responses: responses(okJson('`{ nodeId, since, at, connections: { current, peak, peakAt }, channels: { live, tracked, mostActive, popular }, hours, busiestHour, peakConnectionsHour, users: { tracked, top } }`')),
        },
      },
    },
  }
}
