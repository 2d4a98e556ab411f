// A real authorization server for the OAuth tests (tests/gateway/oauth.rs): npm `oidc-provider`
// (pinned in .ci/node/package.json) on 127.0.0.1, an ephemeral port, issuing JWT access tokens
// for one resource, the gateway's.
//
//   node idp.mjs OIDC_PROVIDER_DIR AUDIENCE [ALG]
//
// Prints one JSON line, {"issuer", "jwks_uri", "token_endpoint"}, once it listens; runs until
// killed. The client `agent` (secret `agent-secret-0000000000`) may use client_credentials; any
// client may register itself (RFC 7591) and use the authorization-code flow, whose login and
// consent this script completes by itself (the user `alice` grants every scope asked for).
// Access tokens are JWTs (`typ: at+jwt`) signed with ALG (ES256 unless given), for AUDIENCE
// only, with the scopes eks:read, eks:admin and tollgate:admin.

import http from 'node:http';
import crypto from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modDir, audience, alg = 'ES256'] = process.argv.slice(2);
if (!modDir || !audience) {
  console.error('usage: node idp.mjs OIDC_PROVIDER_DIR AUDIENCE [ALG]');
  process.exit(2);
}
const { default: Provider, errors } = await import(pathToFileURL(path.join(modDir, 'lib/index.js')).href);

function jwk(type, options, kid, keyAlg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg: keyAlg, use: 'sig' };
}
const keys = [
  jwk('rsa', { modulusLength: 2048 }, 'rsa-1', 'RS256'),
  jwk('ec', { namedCurve: 'P-256' }, 'ec-1', 'ES256'),
  jwk('ed25519', {}, 'ed-1', 'EdDSA'),
];

const SCOPES = 'eks:read eks:admin tollgate:admin';
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'agent',
    client_secret: 'agent-secret-0000000000',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: SCOPES,
  }],
  jwks: { keys },
  scopes: ['openid', 'offline_access', ...SCOPES.split(' ')],
  enabledJWA: { authorizationSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== audience) throw new errors.InvalidTarget(`unknown resource ${resource}`);
        return { scope: SCOPES, audience, accessTokenFormat: 'jwt', accessTokenTTL: 300, jwt: { sign: { alg } } };
      },
    },
  },
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  pkce: { required: () => true },
  ttl: { AccessToken: 300, AuthorizationCode: 60, Grant: 600, Interaction: 60, Session: 600 },
});
provider.proxy = false;

const callback = provider.callback();
server.on('request', async (req, res) => {
  // The interaction a user would see: logged in as alice, every scope asked for granted.
  if (req.url.startsWith('/interaction/')) {
    try {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === 'login') {
        await provider.interactionFinished(req, res, { login: { accountId: 'alice' } }, { mergeWithLastSubmission: false });
        return;
      }
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
      const missing = details.prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    } catch (e) {
      res.statusCode = 500;
      res.end(String(e));
    }
    return;
  }
  callback(req, res);
});

console.log(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks`, token_endpoint: `${issuer}/token` }));
