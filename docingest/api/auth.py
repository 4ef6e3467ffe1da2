"""Who may call what: API keys with scopes, per-key rate limits, CORS. See docs/security.md.

Routes declare what they need: `dependencies=[require_scope(Scope.READ)]`, or one of several
scopes (`require_scope(Scope.READ, Scope.LABEL)`). `Scope.ADMIN` implies the others. Missing or
unknown key: 401 with `WWW-Authenticate: Bearer`; a key without the scope: 403; over its rate
limit: 429 with `Retry-After`. With no key configured the service is open, for this machine
only: `create_app` refuses a non-loopback HOST, and `Gate` refuses requests from other origins,
hosts and interfaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request, params, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import RouteContext, iter_route_contexts
from starlette._utils import get_route_path
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from docingest.api.access import Access
from docingest.api.bulk import NDJSON_TYPES
from docingest.api.deps import AccessDep
from docingest.api.limits import reads_body, refuse
from docingest.api.openapi import (
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    error_response,
    extend_openapi,
    operations,
)
from docingest.api.routing import PathTable
from docingest.keys import ApiKey, Keyring, Scope, is_loopback, open_exposure
from docingest.settings import PublicEndpoint, Settings

__all__ = ["OpenExposureError", "Scope", "install_security", "require_scope"]

logger = structlog.get_logger(__name__)

SECURITY_SCHEME = "apiKey"


@dataclass(frozen=True)
class Requirement:
    """A route's need (one of `scopes`), as a dependency; the OpenAPI document is derived from
    it."""

    scopes: tuple[Scope, ...]
    public_if: PublicEndpoint | None = None

    async def __call__(self, request: Request, access: AccessDep) -> None:
        if self.public_if in access.public or access.keyring.open:
            return
        key: ApiKey | None = request.scope.get(_AUTHENTICATED)
        if key is None:
            key = access.authenticate(request.headers.get("authorization"))
        admitted = request.scope.get(_ADMITTED) is self  # Gate checked it, and counted it
        if not admitted:
            access.check_scope(key, *self.scopes)
        # For logs and metrics labels: the key's name, never the key.
        request.state.api_key_name = key.name
        structlog.contextvars.bind_contextvars(api_key=key.name)
        if not admitted:
            access.throttle(key)


def require_scope(*scopes: Scope, public_if: PublicEndpoint | None = None) -> params.Depends:
    """The dependency guarding a route: `dependencies=[require_scope(Scope.READ)]`; a key with
    any one of `scopes` may call it.

    `public_if` names the endpoint in PUBLIC_ENDPOINTS that lets anyone in without a key
    (health, ready, metrics, docs, dashboard).
    """
    return params.Depends(Requirement(scopes, public_if))


class OpenExposureError(RuntimeError):
    """An app without keys would be reachable from other machines."""


def install_security(app: FastAPI, settings: Settings, *, ndjson_paths: frozenset[str]) -> None:
    """Keys, the header checks of `Gate`, CORS, and the OpenAPI security description.

    Raises OpenExposureError rather than build an open app on a non-loopback HOST: the guard
    belongs to the app, so that `uvicorn docingest.api:app` is held to it as `docingest api` is.
    """
    keyring = Keyring.from_settings(settings)
    if problem := open_exposure(keyring, settings.host, allowed=settings.allow_open_access):
        raise OpenExposureError(problem)
    access = Access(keyring, settings.public_endpoints, settings.rate_limit_per_minute)
    app.state.access = access
    if access.keyring.open:
        logger.warning(
            "no API key configured (API_KEYS, API_KEYS_FILE): open mode, anyone who can reach "
            "this process may ingest, read and administer; bind it to loopback only"
        )
    docs_paths = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    guarded_docs = set() if "docs" in access.public else {path for path in docs_paths if path}
    app.add_middleware(
        Gate,
        routes=app.routes,
        access=access,
        guarded_docs=frozenset(guarded_docs),
        ndjson_paths=ndjson_paths,
        cors_origins=frozenset(origin.encode() for origin in settings.cors_origins),
        loopback_only=not settings.allow_open_access,
    )
    if settings.cors_origins:  # added after the Gate, so outside it: its refusals carry CORS
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    _describe_security(app, access)


# Where Gate leaves the key it found, for `Requirement` not to hash it again, and the
# requirement it checked (scope and rate limit), for `Requirement` not to check and count again.
_AUTHENTICATED = "docingest.api_key"
_ADMITTED = "docingest.admitted"
_JSON = b"application/json"
_NDJSON = frozenset(media_type.encode() for media_type in NDJSON_TYPES)


class RouteRequirements:
    """The `Requirement` of each method and path, read from the app's routes (`require_scope`
    in their dependencies or their routers'), never from a table written by hand. Built with the
    middleware stack, once every route is added; a path resolves as `routing.PathTable` (the
    router's view) resolves it."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.paths = PathTable(routes)
        self.requirements: dict[tuple[str, str], Requirement] = {}
        for route in iter_route_contexts(list(routes)):
            requirement = route_requirement(route)
            if requirement is not None and route.path_format is not None:
                for method in route.methods or ():
                    self.requirements.setdefault((method, route.path_format), requirement)

    def of(self, scope: AsgiScope) -> Requirement | None:
        """What the route serving this request needs; None when no route serves it."""
        found = self.paths.resolve(get_route_path(scope))
        return (
            None if found is None else self.requirements.get((scope["method"], found[0].template))
        )


class Gate:
    """What can be decided from the headers, decided before a byte of body is read.

    Keys configured: a request with a body, or for the guarded docs, needs a known key (401),
    so a caller without one cannot make the body limit buffer MAX_BODY_BYTES for it; for a
    request with a body, the key must also have the route's scope (403) and be within its rate
    limit (429), so that no key can make the process hold a body its route would refuse. Open mode:
    only this machine may call, and no web page it visits: a foreign `Origin` (403) is a page
    of another site, a `Host` that is not a loopback or single-label name (403) is DNS
    rebinding (a public name of the attacker's, resolving to 127.0.0.1), and unless
    ALLOW_OPEN_ACCESS a connection on a non-loopback interface (403) means the server is bound
    wider than the guard in `install_security` could see (`uvicorn --host 0.0.0.0`). A body
    must be JSON (or NDJSON where the route takes it), else 415: browsers send the types of
    HTML forms across sites without asking (no CORS preflight), never `application/json`; and
    uncompressed (415 for any `Content-Encoding` but identity).
    Costs a pass over the headers and dictionary lookups; the key found is hashed only once.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        access: Access,
        guarded_docs: frozenset[str],
        ndjson_paths: frozenset[str],
        cors_origins: frozenset[bytes],
        loopback_only: bool,
    ) -> None:
        self.app = app
        self.requirements = RouteRequirements(routes)
        self.access = access
        self.guarded_docs = guarded_docs
        self.ndjson_paths = ndjson_paths
        self.cors_origins = cors_origins
        self.loopback_only = loopback_only

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                self._check(scope)
            except HTTPException as error:
                headers = [
                    (k.lower().encode(), v.encode()) for k, v in (error.headers or {}).items()
                ]
                await refuse(receive, send, error.status_code, error.detail, headers=headers)
                return
        await self.app(scope, receive, send)

    def _check(self, scope: AsgiScope) -> None:
        headers = dict(scope["headers"])
        key = None
        if self.access.keyring.open:
            self._check_local(scope, headers)
        elif scope["path"] in self.guarded_docs:
            self.access.check_scope(self._authenticate(headers), Scope.READ)
        elif reads_body(scope["method"]):
            key = scope[_AUTHENTICATED] = self._authenticate(headers)
        if reads_body(scope["method"]) and (
            b"transfer-encoding" in headers or _declares_body(headers)
        ):
            _check_encoding(headers.get(b"content-encoding", b""))
            self._check_media_type(scope["path"], headers.get(b"content-type", b""))
        if key is not None:
            self._admit(scope, key)

    def _admit(self, scope: AsgiScope, key: ApiKey) -> None:
        """The route's own check (`Requirement`), made here so that it precedes the body."""
        requirement = self.requirements.of(scope)
        if requirement is None or requirement.public_if in self.access.public:
            return
        self.access.check_scope(key, *requirement.scopes)
        self.access.throttle(key)
        scope[_ADMITTED] = requirement

    def _authenticate(self, headers: dict[bytes, bytes]) -> ApiKey:
        return self.access.authenticate(headers.get(b"authorization", b"").decode("latin-1"))

    def _check_local(self, scope: AsgiScope, headers: dict[bytes, bytes]) -> None:
        host = headers.get(b"host")
        if host is not None and not _local_host(host):
            raise _forbidden("Host is not this machine's; open mode answers loopback names only")
        origin = headers.get(b"origin")
        if (
            origin is not None
            and origin not in self.cors_origins
            and (host is None or origin not in (b"http://" + host, b"https://" + host))
        ):
            raise _forbidden("Requests from other origins are refused in open mode")
        server = scope.get("server")
        if self.loopback_only and server and _foreign_address(server[0]):
            raise _forbidden("Open mode answers on the loopback interface only")

    def _check_media_type(self, path: str, content_type: bytes) -> None:
        media_type = content_type.split(b";", 1)[0].strip().lower()
        if media_type != _JSON and not (media_type in _NDJSON and path in self.ndjson_paths):
            accepted = "application/json" + (
                " or " + ", ".join(NDJSON_TYPES) if path in self.ndjson_paths else ""
            )
            raise HTTPException(
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail=f"Content-Type must be {accepted}",
            )


def _check_encoding(content_encoding: bytes) -> None:
    """A compressed body would be parsed as JSON and refused as invalid, which misleads: say
    what is wrong (RFC 7694: 415, with the encodings taken in `Accept-Encoding`)."""
    if content_encoding.strip().lower() not in (b"", b"identity"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="Content-Encoding must be identity: send the body uncompressed",
            headers={"Accept-Encoding": "identity"},
        )


def _declares_body(headers: dict[bytes, bytes]) -> bool:
    return headers.get(b"content-length", b"0").strip() not in (b"0", b"")


def _forbidden(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=detail)


@lru_cache(maxsize=256)
def _local_host(host: bytes) -> bool:
    """A Host header naming this machine: a loopback address or `localhost`, or any name
    without a dot (no public DNS name, so none a web attacker controls), any port."""
    name = host.decode("latin-1")
    name = name[1:].partition("]")[0] if name.startswith("[") else name.partition(":")[0]
    return "." not in name or is_loopback(name)


@lru_cache(maxsize=256)
def _foreign_address(address: str) -> bool:
    """An IP address of this server's socket that other machines can reach."""
    try:
        return not ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a Unix socket, or a test transport


def route_requirement(route: RouteContext) -> Requirement | None:
    """What `require_scope` says this route needs (its router's dependencies included)."""
    for dependency in getattr(route, "dependencies", None) or ():
        if isinstance(dependency.dependency, Requirement):
            return dependency.dependency
    return None


_AUTH_RESPONSES = {
    "401": error_response(
        "No API key, or an unknown one (`Authorization: Bearer <key>`)", headers=WWW_AUTHENTICATE
    ),
    "403": error_response("The API key lacks the scope this operation needs"),
    "429": error_response(
        "Too many requests: the key's rate limit, or a full queue; retry after `Retry-After` "
        "seconds",
        headers=RETRY_AFTER,
    ),
}
# Open mode: what `Gate` refuses before any route is reached.
_OPEN_MODE_REFUSAL = error_response(
    "Open mode answers this machine only: refused for a request from another site (`Origin`), "
    "for a host name that is not a loopback or single-label one (`Host`), or on a non-loopback "
    "interface"
)


def _describe_security(app: FastAPI, access: Access) -> None:
    """Add the bearer scheme, and 401/403/429, to every operation that needs a key; in open
    mode, the 403 of `Gate` to every operation."""

    def edit(schema: dict[str, Any]) -> None:
        if access.keyring.open:
            for operation in operations(schema):
                operation["responses"].setdefault("403", _OPEN_MODE_REFUSAL)
            return
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
                + f"\n\nNeeds an API key with scope {_either(requirement.scopes)}."
            ).strip()
            for code, response in _AUTH_RESPONSES.items():
                operation["responses"].setdefault(code, response)

    extend_openapi(app, edit)


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


def _either(scopes: tuple[Scope, ...]) -> str:
    return " or ".join(f"`{scope}`" for scope in scopes)
