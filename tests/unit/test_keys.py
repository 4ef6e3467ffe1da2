"""API keys on their own: generation, digests, API_KEYS and the keys file, scopes, open exposure."""

from pathlib import Path

import pytest

from docingest.keys import (
    KEY_PREFIX,
    ApiKey,
    Keyring,
    Scope,
    digest,
    generate_key,
    load_keys_file,
    open_exposure,
    parse_env_keys,
)
from docingest.settings import Settings


def test_a_generated_key_is_new_prefixed_and_found_by_its_digest_only() -> None:
    key, other = generate_key(), generate_key()
    assert key.startswith(KEY_PREFIX)
    assert key != other
    assert len(digest(key)) == 64
    assert digest(key) == digest(key) != digest(other)
    keyring = Keyring([ApiKey("ops", frozenset({Scope.ADMIN}), digest(key))])
    found = keyring.find(key)
    assert found is not None
    assert found.name == "ops"
    assert keyring.find(other) is None
    assert keyring.find(digest(key)) is None  # the stored digest does not open the door


def test_api_keys_entries_round_trip_and_admin_implies_the_other_scopes() -> None:
    reader = ApiKey("reader", frozenset({Scope.READ}), digest("r"))
    ops = ApiKey("ops", frozenset({Scope.ADMIN}), digest("o"))
    assert parse_env_keys(f" {reader.env_entry()},\n{ops.env_entry()} ") == [reader, ops]
    assert parse_env_keys("") == []
    assert reader.allows(Scope.READ)
    assert not reader.allows(Scope.INGEST)
    assert all(ops.allows(scope) for scope in Scope)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("reader:read", "API_KEYS entry 'reader' is not name:scope\\+scope:sha256"),
        (f"reader:write:{digest('r')}", "key 'reader': scopes must be among"),
        ("reader:read:abc", "key 'reader': sha256 must be 64 lowercase hex digits"),
        (f"no/slash:read:{digest('r')}", "key name 'no/slash'"),
    ],
)
def test_a_bad_api_keys_entry_is_refused_with_its_name(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_env_keys(entry)


def test_the_keys_file_holds_tables_with_an_optional_rate_limit(tmp_path: Path) -> None:
    ingest = ApiKey("feeder", frozenset({Scope.INGEST, Scope.READ}), digest("f"), 600)
    reader = ApiKey("reader", frozenset({Scope.READ}), digest("r"))
    path = tmp_path / "keys.toml"
    path.write_text(ingest.toml_entry() + "\n" + reader.toml_entry())
    assert load_keys_file(path) == [ingest, reader]

    path.write_text(reader.toml_entry() + 'comment = "x"\n')
    with pytest.raises(ValueError, match="key 'reader' has unknown fields \\['comment'\\]"):
        load_keys_file(path)
    path.write_text('[[keys]]\nname = "empty"\nscopes = []\nsha256 = "' + digest("e") + '"\n')
    with pytest.raises(ValueError, match="key 'empty' has no scope"):
        load_keys_file(path)


READER = f'name = "reader"\nscopes = ["read"]\nsha256 = "{digest("r")}"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key: write one \\[\\[keys\\]\\] table per key"),
        ("# every key was removed\n", "no key"),
        (f"[[key]]\n{READER}", "unknown tables \\['key'\\]; keys are \\[\\[keys\\]\\]"),
        (f"[keys]\n{READER}", "no key"),
        (f"[[keys]]\n{READER}rate_limit_per_minute = 0.5\n", "must be a whole number"),
        (f"[[keys]]\n{READER}rate_limit_per_minute = 2.5\n", "must be a whole number"),
        (f"[[keys]]\n{READER}rate_limit_per_minute = true\n", "must be a whole number"),
        ("[[keys]]\n" + READER.replace('["read"]', '"read"'), "scopes must be a list"),
    ],
    ids=["empty", "comments only", "[[key]]", "[keys]", "0.5/min", "2.5/min", "true/min", "scope"],
)
def test_a_keys_file_that_would_not_mean_what_it_says_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    """Each of these used to give zero keys (open mode) or an unlimited key, silently."""
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_keys_file(path)


def test_the_keyring_joins_api_keys_and_the_file_and_refuses_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(ApiKey("filed", frozenset({Scope.READ}), digest("b")).toml_entry())
    entry = ApiKey("listed", frozenset({Scope.READ}), digest("a")).env_entry()
    settings = Settings(_env_file=None, api_keys=entry, api_keys_file=path)
    assert sorted(key.name for key in Keyring.from_settings(settings).keys) == ["filed", "listed"]

    same_key = [ApiKey(name, frozenset({Scope.READ}), digest("a")) for name in ("x", "y")]
    with pytest.raises(ValueError, match="keys 'x' and 'y' are the same key"):
        Keyring(same_key)
    same_name = [ApiKey("x", frozenset({Scope.READ}), digest(secret)) for secret in "ab"]
    with pytest.raises(ValueError, match="two keys have the same name"):
        Keyring(same_name)


def test_only_an_open_keyring_on_a_reachable_host_is_an_exposure() -> None:
    open_ring = Keyring([])
    closed = Keyring([ApiKey("ops", frozenset({Scope.ADMIN}), digest("o"))])
    assert open_ring.open
    assert not closed.open
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert open_exposure(open_ring, host, allowed=False) is None
    problem = open_exposure(open_ring, "0.0.0.0", allowed=False)
    assert problem is not None
    assert problem.startswith("refusing to serve on 0.0.0.0")
    assert open_exposure(open_ring, "myhost", allowed=False) is not None
    assert open_exposure(open_ring, "0.0.0.0", allowed=True) is None
    assert open_exposure(closed, "0.0.0.0", allowed=False) is None
