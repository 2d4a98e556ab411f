"""Calls a tool through an OAuth-protected gateway with the official Python SDK (mcp 2.3.0) and
prints what happened as JSON. Used by tests/gateway/oauth.rs against oidc-provider (idp.mjs).

    python oauth_client.py --url URL --token TOKEN   # a token obtained beforehand
    python oauth_client.py --url URL --login         # the SDK's own OAuth client

With --login the SDK does what the MCP authorization spec says: its first request gets 401 with
`WWW-Authenticate: Bearer resource_metadata=...`; it reads the protected-resource metadata, then
the authorization server's metadata, registers itself (RFC 7591), sends the user to the
authorization endpoint with PKCE and the resource indicator, exchanges the code, and retries
with the token. The user's part (login and consent) is done by idp.mjs by itself; this script
only follows the browser's redirects until the one to the redirect URI, whose code it hands back.
"""

import argparse
import asyncio
import json
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT_URI = "http://127.0.0.1:1/callback"


class Memory(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def login_provider(url: str, seen: dict) -> OAuthClientProvider:
    redirect: dict = {}

    async def follow(authorization_url: str) -> None:
        # The browser: follow redirects (keeping cookies) until the one to the redirect URI.
        seen["authorization_url"] = authorization_url
        async with httpx2.AsyncClient(follow_redirects=False, timeout=10) as browser:
            at = authorization_url
            for _ in range(10):
                r = await browser.get(at)
                location = r.headers.get("location")
                if location is None:
                    raise RuntimeError(f"the authorization stopped at {at}: HTTP {r.status_code} {r.text[:300]}")
                at = urljoin(at, location)
                if at.startswith(REDIRECT_URI):
                    redirect.update({k: v[0] for k, v in parse_qs(urlparse(at).query).items()})
                    return
        raise RuntimeError("more than 10 redirects")

    async def callback() -> AuthorizationCodeResult:
        if "code" not in redirect:
            raise RuntimeError(f"no code in the redirect: {redirect}")
        return AuthorizationCodeResult(code=redirect["code"], state=redirect.get("state"), iss=redirect.get("iss"))

    metadata = OAuthClientMetadata(
        client_name="tollgate-oauth-test",
        redirect_uris=[REDIRECT_URI],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    return OAuthClientProvider(
        server_url=url,
        client_metadata=metadata,
        storage=Memory(),
        redirect_handler=follow,
        callback_handler=callback,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token")
    parser.add_argument("--login", action="store_true")
    args = parser.parse_args()
    seen: dict = {}
    if args.login:
        provider = login_provider(args.url, seen)
        http = httpx2.AsyncClient(auth=provider, timeout=30)
    else:
        provider = None
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {args.token}"}, timeout=30)
    out: dict = {}
    async with http:
        async with Client(streamable_http_client(args.url, http_client=http), read_timeout_seconds=30) as client:
            r = await client.call_tool("get_eks_insights", {"cluster_name": "prod-eks"})
            out["is_error"] = r.is_error
            out["text"] = r.content[0].text[:200]
    if provider is not None:
        ctx = provider.context
        prm = ctx.protected_resource_metadata
        out["resource"] = str(prm.resource) if prm else None
        out["authorization_servers"] = [str(s) for s in prm.authorization_servers] if prm else None
        out["access_token"] = ctx.current_tokens.access_token if ctx.current_tokens else None
        out["authorization_url"] = seen.get("authorization_url")
    json.dump(out, sys.stdout)


asyncio.run(main())
