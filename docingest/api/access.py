"""What every access check needs, built once per app from the settings: the keyring, the public
endpoints and the rate limiter. Its own module so that `deps` can hand it to `auth`'s checks as a
typed dependency without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import HTTPException, status
from fastapi.security.utils import get_authorization_scheme_param

from docingest.api.ratelimit import RateLimiter
from docingest.keys import ApiKey, Keyring, Scope
from docingest.settings import PublicEndpoint


@dataclass
class Access:
    """What every check needs, built once per app from the settings."""

    keyring: Keyring
    public: frozenset[PublicEndpoint]
    rate_limit_per_minute: int
    limiter: RateLimiter = field(default_factory=RateLimiter)

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The caller's key, or an HTTPException (401); only called when keys are configured."""
        scheme, token = get_authorization_scheme_param(authorization)
        if not token or scheme.lower() != "bearer":
            raise _unauthorized("Not authenticated")
        key = self.keyring.find(token)
        if key is None:
            raise _unauthorized("Invalid API key")
        return key

    @staticmethod
    def check_scope(key: ApiKey, *scopes: Scope) -> None:
        """403 unless the key has one of `scopes`."""
        if not any(key.allows(scope) for scope in scopes):
            needed = " or ".join(f"'{scope}'" for scope in scopes)
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, detail=f"This API key lacks the {needed} scope"
            )

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
