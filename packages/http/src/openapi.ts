import { z } from 'zod'
import { broadcastBody, broadcastToChannelBody, kickBody } from './admin.js'

/** The OpenAPI 3.1 document of the admin API, served at `{prefix}/openapi.json`. Request bodies come from the same zod schemas that validate them. */
export function openApiDocument(prefix: string): Record<string, unknown> {
  const json = (schema: z.ZodType) => ({ 'application/json': { schema: z.toJSONSchema(schema, { unrepresentable: 'any' }) } })
  const error = { description: 'An error: `{ type: "error", code: "RT_00x", message }`', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }
  const channel = { name: 'id', in: 'path', required: true, description: 'Channel name, URL-encoded (e.g. `public%3Anews`)', schema: { type: 'string' } }
  const responses = (ok: Record<string, unknown>) => ({ ...ok, 400: error, 401: error, 403: error, 404: error, 413: error })
  const okJson = (description: string) => ({ 200: { description, content: { 'application/json': { schema: { type: 'object' } } } } })
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
