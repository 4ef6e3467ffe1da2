"""API keys: how they are made, configured (hashed) and recognised. See docs/security.md.

A key is 256 random bits; the service stores only its SHA-256. A slow password hash (bcrypt,
argon2) defends low-entropy secrets against guessing; against 2^256 possibilities guessing is
hopeless anyway, and a slow hash would cost every request tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from docingest.settings import Settings

KEY_PREFIX = "dik_"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Scope(StrEnum):
    """What a key may do. `admin` implies the others: an operator's key does everything.

    `label`: set and remove people's labels, and read the documents under review.
    """

    INGEST = "ingest"
    READ = "read"
    LABEL = "label"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """A configured key: never the key itself, only its SHA-256."""

    name: str
    scopes: frozenset[Scope]
    sha256: str
    rate_limit_per_minute: int | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"key name {self.name!r}: 1-64 of A-Z a-z 0-9 _ . -")
        if not _DIGEST.match(self.sha256):
            raise ValueError(f"key {self.name!r}: sha256 must be 64 lowercase hex digits")
        if not self.scopes:
            raise ValueError(f"key {self.name!r} has no scope")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 0:
            raise ValueError(f"key {self.name!r}: rate_limit_per_minute must be >= 0")

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or Scope.ADMIN in self.scopes

    def env_entry(self) -> str:
        """This key as one comma-separated item of API_KEYS."""
        return f"{self.name}:{'+'.join(sorted(self.scopes))}:{self.sha256}"

    def toml_entry(self) -> str:
        """This key as a table of the API_KEYS_FILE."""
        scopes = ", ".join(f'"{scope}"' for scope in sorted(self.scopes))
        table = f'[[keys]]\nname = "{self.name}"\nscopes = [{scopes}]\nsha256 = "{self.sha256}"\n'
        if self.rate_limit_per_minute is not None:
            table += f"rate_limit_per_minute = {self.rate_limit_per_minute}\n"
        return table


def generate_key() -> str:
    """A new secret: the prefix makes a leaked key easy to spot (secret scanners, logs)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_env_keys(text: str) -> list[ApiKey]:
    """API_KEYS: `name:scope+scope:sha256`, comma- or whitespace-separated."""
    keys = []
    for entry in re.split(r"[,\s]+", text.strip()):
        if not entry:
            continue
        try:
            name, scopes, sha256 = entry.split(":")
        except ValueError:
            raise ValueError(
                f"API_KEYS entry {entry.split(':')[0]!r} is not name:scope+scope:sha256"
            ) from None
        keys.append(ApiKey(name, _scopes(name, scopes.split("+")), sha256))
    return keys


def load_keys_file(path: Path) -> list[ApiKey]:
    """API_KEYS_FILE: `[[keys]]` tables: name, scopes, sha256, optional rate_limit_per_minute.

    A file that names no key is an error, not open mode: `[[key]]` for `[[keys]]`, or a file
    emptied by mistake, would otherwise switch authentication off without a word.
    """
    with path.open("rb") as file:
        document = tomllib.load(file)
    unknown_tables = set(document) - {"keys"}
    if unknown_tables:
        raise ValueError(f"{path}: unknown tables {sorted(unknown_tables)}; keys are [[keys]]")
    tables = document.get("keys", [])
    if not isinstance(tables, list) or not tables:
        raise ValueError(f"{path}: no key: write one [[keys]] table per key (docs/security.md)")
    return [_file_key(path, table) for table in tables]


def _file_key(path: Path, table: dict[str, object]) -> ApiKey:
    name = str(table.get("name", ""))
    unknown = set(table) - {"name", "scopes", "sha256", "rate_limit_per_minute"}
    if unknown:
        raise ValueError(f"{path}: key {name!r} has unknown fields {sorted(unknown)}")
    limit = table.get("rate_limit_per_minute")
    # bool is an int to Python; 2.5 would silently become 2, and 0.5 would become 0 (unlimited).
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
        raise ValueError(f"{path}: key {name!r}: rate_limit_per_minute must be a whole number")
    scopes = table.get("scopes", [])
    if not isinstance(scopes, list):
        raise ValueError(f"{path}: key {name!r}: scopes must be a list")
    return ApiKey(name, _scopes(name, scopes), str(table.get("sha256", "")), limit)


def _scopes(name: str, values: Iterable[str]) -> frozenset[Scope]:
    try:
        return frozenset(Scope(value) for value in values)
    except ValueError:
        raise ValueError(
            f"key {name!r}: scopes must be among {[str(scope) for scope in Scope]}"
        ) from None


class Keyring:
    """The configured keys, by digest. Empty means open mode."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._by_digest: dict[str, ApiKey] = {}
        for key in keys:
            if key.sha256 in self._by_digest:
                raise ValueError(f"keys {self._by_digest[key.sha256].name!r} and {key.name!r} "
                                 "are the same key")  # fmt: skip
            self._by_digest[key.sha256] = key
        names = [key.name for key in self._by_digest.values()]
        if len(set(names)) != len(names):
            raise ValueError("two keys have the same name")

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        keys = parse_env_keys(settings.api_keys)
        if settings.api_keys_file is not None:
            keys += load_keys_file(settings.api_keys_file)
        return cls(keys)

    @property
    def open(self) -> bool:
        return not self._by_digest

    @property
    def keys(self) -> list[ApiKey]:
        return list(self._by_digest.values())

    def find(self, presented: str) -> ApiKey | None:
        """The key whose digest matches, compared in constant time.

        The secret itself never meets a variable-time comparison: only its SHA-256 does, in the
        dict lookup. Timing can at most reveal bits of a stored digest, and a digest does not
        open the door (a key with that digest is a SHA-256 preimage). `compare_digest` then
        confirms the match without short-circuiting.
        """
        candidate = digest(presented)
        found = self._by_digest.get(candidate)
        if found is None or not hmac.compare_digest(found.sha256, candidate):
            return None
        return found


def is_loopback(host: str) -> bool:
    """Only this machine can connect: `localhost`, 127.0.0.0/8, ::1. Any other name may not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_exposure(keyring: Keyring, host: str, *, allowed: bool) -> str | None:
    """Why serving on `host` would expose an open API, or None when it would not. The app
    refuses to start with it (`uvicorn docingest.api:app` included), the CLI says it first."""
    if not keyring.open or is_loopback(host) or allowed:
        return None
    return (
        f"refusing to serve on {host} without API keys: anyone who reaches it could ingest, "
        "read and delete documents. Configure API_KEYS or API_KEYS_FILE (`docingest keys "
        "create`), bind to 127.0.0.1, or set ALLOW_OPEN_ACCESS=true."
    )
