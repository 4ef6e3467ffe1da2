"""The web tier: `uvicorn docingest.api:app` serves it."""

from docingest.api.factory import create_app

app = create_app(owns_process=True)

__all__ = ["app", "create_app"]
