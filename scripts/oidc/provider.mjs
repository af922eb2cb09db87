// A real OpenID Connect provider for Autoheal's security tests, on loopback only.
//   node provider.mjs PORT        (or OIDC_TEST_PORT; 0 picks a free port, printed as "listening PORT")
// Clients (secrets are test-only and fixed):
//   autoheal-web      authorization code + PKCE; the id_token carries `roles` and `groups`
//   machine-ops/-admin/-none/-short   client_credentials; JWT access tokens for the API audience
// An account's roles come from its login name ("ops-*" -> ops, "admin-*" -> admin) unless a test
// sets them with POST /test/roles?account=NAME&roles=a,b (a test control route, loopback only).
import crypto from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2] ?? process.env.OIDC_TEST_PORT ?? 0);
const API = process.env.OIDC_TEST_API_AUDIENCE ?? 'urn:autoheal:api';
const OTHER_API = 'urn:other:api';
const redirectUris = (process.env.OIDC_TEST_REDIRECT_URIS ?? 'http://testserver/oidc/callback/').split(',');
const machineRoles = { 'machine-ops': ['ops'], 'machine-admin': ['admin'], 'machine-none': [], 'machine-short': ['ops'] };
const rolesOverride = new Map();

function rolesOf(accountId) {
  if (rolesOverride.has(accountId)) return rolesOverride.get(accountId);
  return ['ops', 'admin'].filter((role) => accountId.startsWith(`${role}-`));
}

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `k-${crypto.randomUUID()}`, alg: 'RS256', use: 'sig' };

const machineClient = (clientId) => ({
  client_id: clientId,
  client_secret: `${clientId}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
});

const server = http.createServer();
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks: { keys: [signingKey] },
    clients: [
      {
        client_id: 'autoheal-web',
        client_secret: 'autoheal-web-secret',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: redirectUris,
        token_endpoint_auth_method: 'client_secret_post',
      },
      ...Object.keys(machineRoles).map(machineClient),
    ],
    claims: { openid: ['sub'], roles: ['roles', 'groups'], profile: ['name', 'preferred_username'] },
    scopes: ['openid', 'roles', 'profile', 'api'],
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    async findAccount(ctx, accountId) {
      return {
        accountId,
        async claims() {
          const roles = rolesOf(accountId);
          return { sub: accountId, name: accountId, preferred_username: accountId, roles, groups: roles };
        },
      };
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf ?? (client.clientId in machineRoles ? API : undefined),
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resource, client) => {
          if (!(client.clientId in machineRoles) || ![API, OTHER_API].includes(resource)) throw new errors.InvalidTarget();
          return {
            scope: 'api',
            audience: resource,
            accessTokenFormat: 'jwt',
            accessTokenTTL: client.clientId === 'machine-short' ? 1 : 600,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    async extraTokenClaims(ctx, token) {
      if (token.clientId in machineRoles) return { roles: machineRoles[token.clientId] };
      return undefined;
    },
  });
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  const handle = provider.callback();
  server.on('request', (req, res) => {
    const url = new URL(req.url, issuer);
    if (req.method === 'POST' && url.pathname === '/test/roles') {
      rolesOverride.set(url.searchParams.get('account'), (url.searchParams.get('roles') ?? '').split(',').filter(Boolean));
      res.writeHead(204).end();
      return;
    }
    handle(req, res);
  });
  console.log(`listening ${server.address().port}`);
});

// Idle keep-alive connections would hold server.close() open for seconds: end them with the process.
process.on('SIGTERM', () => {
  server.closeAllConnections();
  process.exit(0);
});
