"""The service's two pages, `/dashboard` and `/review`: static files shipped in the package.

A page and its files carry no data, so they are served like the health checks (public unless
PUBLIC_ENDPOINTS leaves `dashboard` out); each page's script sends the API key the user types
in. A strict Content-Security-Policy allows only these files: no inline script, no other origin.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import HTTPException, Response, status

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def page_file(page: str, name: str) -> Response:
    """One of `page`'s files (`review.html`, `review.js`, `review.css` for `review`); 404 for
    any other name, including a bare suffix such as `.js`, which names no file."""
    suffix = name.removeprefix(page)
    if suffix == name or suffix not in _MEDIA_TYPES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Not found")
    body = resources.files("docingest").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type=_MEDIA_TYPES[suffix],
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )
