"""Who may call what: API keys with scopes, per-key rate limits, CORS. See docs/security.md.

Routes declare what they need: `dependencies=[require_scope(Scope.READ)]`. `Scope.ADMIN`
implies `READ` and `INGEST`. Missing or unknown key: 401 with `WWW-Authenticate: Bearer`;
a key without the scope: 403; over its rate limit: 429 with `Retry-After`. With no key
configured the service is open (and the CLI binds it to loopback only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request, params, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext, iter_route_contexts
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from docingest.api.ratelimit import RateLimiter
from docingest.keys import ApiKey, Keyring, Scope
from docingest.settings import PublicEndpoint, Settings

__all__ = ["Scope", "install_security", "require_scope"]

logger = logging.getLogger(__name__)

SECURITY_SCHEME = "apiKey"


@dataclass
class Access:
    """What every check needs, built once per app from the settings."""

    keyring: Keyring
    public: frozenset[PublicEndpoint]
    rate_limit_per_minute: int
    limiter: RateLimiter = field(default_factory=RateLimiter)

    def authorize(self, authorization: str | None, scope: Scope) -> ApiKey | None:
        """The caller's key if it grants `scope`; None in open mode; else an HTTPException."""
        if self.keyring.open:
            return None
        scheme, token = get_authorization_scheme_param(authorization)
        if not token or scheme.lower() != "bearer":
            raise _unauthorized("Not authenticated")
        key = self.keyring.find(token)
        if key is None:
            raise _unauthorized("Invalid API key")
        if not key.allows(scope):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"This API key lacks the '{scope}' scope"
            )
        return key

    def throttle(self, key: ApiKey) -> None:
        limit = key.rate_limit_per_minute
        limit = self.rate_limit_per_minute if limit is None else limit
        if not limit:
            return
        wait = self.limiter.retry_after(key.name, limit)
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                detail=f"Rate limit of {limit} requests a minute reached; retry later.",
                headers={"Retry-After": str(wait)},
            )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


@dataclass(frozen=True)
class Requirement:
    """A route's need, as a dependency; the OpenAPI document is derived from it."""

    scope: Scope
    public_if: PublicEndpoint | None = None

    async def __call__(self, request: Request) -> None:
        access: Access = request.app.state.access
        if self.public_if in access.public:
            return
        key = access.authorize(request.headers.get("authorization"), self.scope)
        if key is not None:
            # For logs and metrics labels: the key's name, never the key.
            request.state.api_key_name = key.name
            structlog.contextvars.bind_contextvars(api_key=key.name)
            access.throttle(key)


def require_scope(scope: Scope, *, public_if: PublicEndpoint | None = None) -> params.Depends:
    """The dependency guarding a route: `dependencies=[require_scope(Scope.READ)]`.

    `public_if` names the endpoint in PUBLIC_ENDPOINTS that lets anyone in without a key
    (health, ready, metrics, docs, dashboard).
    """
    return params.Depends(Requirement(scope, public_if))


def install_security(app: FastAPI, settings: Settings) -> None:
    """Keys, CORS, the guard on the built-in docs, and the OpenAPI security description."""
    access = Access(
        Keyring.from_settings(settings), settings.public_endpoints, settings.rate_limit_per_minute
    )
    app.state.access = access
    if access.keyring.open:
        logger.warning(
            "no API key configured (API_KEYS, API_KEYS_FILE): open mode, anyone who can reach "
            "this process may ingest, read and administer; bind it to loopback only"
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    docs_paths = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    if "docs" not in access.public and not access.keyring.open:
        app.add_middleware(DocsGuard, paths={path for path in docs_paths if path}, access=access)
    _describe_security(app, access)


class DocsGuard:
    """FastAPI's own /docs, /redoc and /openapi.json are no routes of ours: guard them here."""

    def __init__(self, app: ASGIApp, *, paths: set[str], access: Access) -> None:
        self.app = app
        self.paths = paths
        self.access = access

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths:
            try:
                self.access.authorize(Headers(scope=scope).get("authorization"), Scope.READ)
            except HTTPException as error:
                refusal = JSONResponse(
                    {"detail": error.detail}, error.status_code, headers=error.headers
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def route_requirement(route: RouteContext) -> Requirement | None:
    """What `require_scope` says this route needs (its router's dependencies included)."""
    for dependency in getattr(route, "dependencies", None) or ():
        if isinstance(dependency.dependency, Requirement):
            return dependency.dependency
    return None


_AUTH_RESPONSES = {
    "401": "No API key, or an unknown one (`Authorization: Bearer <key>`)",
    "403": "The API key lacks the scope this operation needs",
    "429": "Too many requests: the key's rate limit, or a full queue; see `Retry-After`",
}


def _describe_security(app: FastAPI, access: Access) -> None:
    """Add the bearer scheme, and 401/403/429, to every operation that needs a key."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        if access.keyring.open:
            return schema
        components = schema.setdefault("components", {})
        components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key; `docingest keys create` makes one",
        }
        for operation, requirement in _operations(app, schema):
            if requirement.public_if in access.public:
                continue
            operation["security"] = [{SECURITY_SCHEME: []}]
            operation["description"] = (
                operation.get("description", "")
                + f"\n\nNeeds an API key with scope `{requirement.scope}`."
            ).strip()
            for code, description in _AUTH_RESPONSES.items():
                operation["responses"].setdefault(code, _error_response(description))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(
    app: FastAPI, schema: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], Requirement]]:
    for route in iter_route_contexts(app.routes):
        requirement = route_requirement(route)
        item = schema["paths"].get(route.path_format, {})
        for method in route.methods or ():
            operation = item.get(method.lower())
            if requirement is not None and operation is not None:
                yield operation, requirement


def _error_response(description: str) -> dict[str, Any]:
    detail = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
    return {"description": description, "content": {"application/json": {"schema": detail}}}
