// The OpenAPI description of /api/v1, served at /api/v1/openapi.json.

const account = {
  name: 'account',
  in: 'path',
  required: true,
  description: 'e-mail, or "me" with a KEY bearer',
  schema: { type: 'string' },
};
const id = {
  name: 'id',
  in: 'path',
  required: true,
  description: 'device ID (A-Z 0-9 _ - . @)',
  schema: { type: 'string' },
};
const name = {
  name: 'name',
  in: 'path',
  required: true,
  description: 'router or alias name',
  schema: { type: 'string' },
};
const error = { $ref: '#/components/schemas/Error' };
const errors = {
  '400': { description: 'validation error', content: { 'application/json': { schema: error } } },
  '401': { description: 'no or bad credentials', content: { 'application/json': { schema: error } } },
  '403': { description: 'not allowed for this caller', content: { 'application/json': { schema: error } } },
  '404': { description: 'not found', content: { 'application/json': { schema: error } } },
  '409': { description: 'conflict', content: { 'application/json': { schema: error } } },
  '422': {
    description: 'refused by the topology rules (cycle, unknown parent, plan limit)',
    content: { 'application/json': { schema: error } },
  },
};
const ok = (description: string, schema: unknown = { type: 'object' }) => ({
  description,
  content: { 'application/json': { schema } },
});
const body = (schema: unknown) => ({ required: true, content: { 'application/json': { schema } } });

export const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'P2Pcluster operator API',
    version: '1',
    description:
      'Accounts, devices, tree, routers and aliases. Admin calls: `Authorization: Bearer <HTTP.ADMIN_TOKEN>`. ' +
      'Account calls also accept the account KEY as the bearer. Every change applies to live connections before the response.',
  },
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    schemas: {
      Error: {
        type: 'object',
        required: ['error', 'message'],
        properties: { error: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } },
      },
      Account: {
        type: 'object',
        properties: {
          email: { type: 'string' },
          level: { type: 'integer' },
          createdAt: { type: 'integer' },
          key: { type: 'string' },
        },
      },
    },
  },
  security: [{ bearer: [] }],
  paths: {
    '/healthz': { get: { summary: 'Liveness: the process answers', security: [], responses: { '200': ok('ok') } } },
    '/readyz': {
      get: {
        summary: 'Readiness: every shard listens (503 otherwise)',
        security: [],
        responses: { '200': ok('ready'), '503': ok('not ready') },
      },
    },
    '/metrics': {
      get: { summary: 'Prometheus metrics', security: [], responses: { '200': ok('text exposition format') } },
    },
    '/api/v1/health': {
      get: { summary: 'Liveness of the server and its shard count', security: [], responses: { '200': ok('status') } },
    },
    '/api/v1/openapi.json': {
      get: { summary: 'This document', security: [], responses: { '200': ok('OpenAPI 3.1') } },
    },
    '/api/v1/accounts': {
      get: { summary: 'List accounts (admin)', responses: { '200': ok('accounts'), ...errors } },
      post: {
        summary: 'Create an account (admin); returns its KEY',
        requestBody: body({
          type: 'object',
          required: ['email'],
          properties: {
            email: { type: 'string' },
            password: { type: 'string' },
            level: { type: 'integer', minimum: 1, maximum: 4 },
          },
        }),
        responses: {
          '201': ok('created', {
            type: 'object',
            properties: { email: { type: 'string' }, key: { type: 'string' }, level: { type: 'integer' } },
          }),
          ...errors,
        },
      },
    },
    '/api/v1/accounts/{account}': {
      parameters: [account],
      get: {
        summary: 'An account (the KEY only for admins)',
        responses: { '200': ok('account', { $ref: '#/components/schemas/Account' }), ...errors },
      },
      delete: {
        summary: 'Delete an account and its topology (admin); its devices are disconnected',
        responses: { '204': { description: 'deleted' }, ...errors },
      },
    },
    '/api/v1/accounts/{account}/key': {
      parameters: [account],
      post: {
        summary: 'Reset the KEY; the old one stops working at once',
        responses: { '200': ok('new key'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/level': {
      parameters: [account],
      put: {
        summary: 'Set the plan level (admin)',
        requestBody: body({ type: 'object', properties: { level: { type: 'integer' } } }),
        responses: { '200': ok('account'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/devices': {
      parameters: [account],
      get: { summary: 'Devices online now', responses: { '200': ok('devices'), ...errors } },
    },
    '/api/v1/accounts/{account}/stats': {
      parameters: [account],
      get: {
        summary:
          'Devices (online, last seen, PUSH commands sent and messages received per live connection), held messages, recent outbox',
        responses: { '200': ok('state'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/events': {
      parameters: [account],
      get: {
        summary:
          'Server-sent events for the console (HTTP port only): `topology` on open and after each change; `state` (as /stats) on open, ' +
          'right after a device registers or leaves, and every second. At most HTTP.MAX_STREAMS at once (503).',
        responses: {
          '200': { description: 'text/event-stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          '503': { description: 'too many streams', content: { 'application/json': { schema: error } } },
          ...errors,
        },
      },
    },
    '/api/v1/accounts/{account}/push': {
      parameters: [account],
      post: {
        summary:
          'Test push: PUSH:<data> to each listed device; offline ones are held when the plan holds. Answers total, delivered, held, offline',
        requestBody: body({
          type: 'object',
          required: ['ids', 'data'],
          properties: { ids: { type: 'array', items: { type: 'string' } }, data: { type: 'string' } },
        }),
        responses: { '200': ok('result'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/devices/{id}': {
      parameters: [account, id],
      delete: {
        summary: 'Disconnect an online device (its will fires, watchers hear OFFLINE); 404 when it is not online',
        responses: { '204': { description: 'kicked' }, ...errors },
      },
    },
    '/api/v1/accounts/{account}/held': {
      parameters: [account],
      get: {
        summary: 'Devices with messages held while offline: count, oldest, and how many HOLDBUFFER dropped',
        responses: { '200': ok('held'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/outbox': {
      parameters: [account],
      get: {
        summary: 'Recent e-mail and SMS of the account: queued, sent, or failed with the last error',
        responses: { '200': ok('messages'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/tree': {
      parameters: [account],
      get: {
        summary: 'The tree: roots and every node with its parent and children',
        responses: { '200': ok('tree'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/tree/nodes': {
      parameters: [account],
      post: {
        summary: 'Add a node under a parent (no parent: a root)',
        requestBody: body({
          type: 'object',
          required: ['id'],
          properties: { id: { type: 'string' }, parent: { type: ['string', 'null'] } },
        }),
        responses: { '201': ok('node'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/tree/nodes/{id}': {
      parameters: [account, id],
      patch: {
        summary: 'Move (parent; null = root) and/or rename (id) a node',
        requestBody: body({
          type: 'object',
          properties: { id: { type: 'string' }, parent: { type: ['string', 'null'] } },
        }),
        responses: { '200': ok('node'), ...errors },
      },
      delete: { summary: 'Delete a node and its subtree', responses: { '200': ok('removed IDs'), ...errors } },
    },
    '/api/v1/accounts/{account}/routers': {
      parameters: [account],
      get: { summary: 'Routers and their members', responses: { '200': ok('routers'), ...errors } },
      post: {
        summary: 'Create a router',
        requestBody: body({ type: 'object', required: ['name'], properties: { name: { type: 'string' } } }),
        responses: { '201': ok('router'), ...errors },
      },
    },
    '/api/v1/accounts/{account}/routers/{name}': {
      parameters: [account, name],
      get: { summary: 'One router', responses: { '200': ok('router'), ...errors } },
      delete: { summary: 'Delete a router', responses: { '204': { description: 'deleted' }, ...errors } },
    },
    '/api/v1/accounts/{account}/routers/{name}/members/{id}': {
      parameters: [account, name, id],
      put: { summary: 'Add a member', responses: { '204': { description: 'added' }, ...errors } },
      delete: { summary: 'Remove a member', responses: { '204': { description: 'removed' }, ...errors } },
    },
    '/api/v1/accounts/{account}/aliases': {
      parameters: [account],
      get: { summary: 'Aliases and their targets', responses: { '200': ok('aliases'), ...errors } },
    },
    '/api/v1/accounts/{account}/aliases/{name}': {
      parameters: [account, name],
      put: {
        summary: 'Create or re-point an alias (takes effect on the next push)',
        requestBody: body({
          type: 'object',
          properties: { targets: { type: 'array', items: { type: 'string' } }, target: { type: 'string' } },
        }),
        responses: { '200': ok('alias'), ...errors },
      },
      delete: { summary: 'Delete an alias', responses: { '204': { description: 'deleted' }, ...errors } },
    },
  },
} as const;
