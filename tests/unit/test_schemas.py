import re
import sys
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from docingest import schemas
from docingest.documents.browse import decode_cursor, encode_cursor
from docingest.schemas import DocumentIn, DocumentOut, QueuedDocument, document_limits, utcnow
from docingest.settings import Settings


def test_id_is_generated_when_absent() -> None:
    first, second = DocumentIn(content="a"), DocumentIn(content="b")
    assert isinstance(first.id, uuid.UUID)
    assert first.id.version == second.id.version == 7  # time-ordered (tests/unit/test_ids.py)
    assert first.id < second.id


def test_client_may_choose_the_id() -> None:
    chosen = uuid.uuid4()
    assert DocumentIn.model_validate({"id": str(chosen), "content": "x"}).id == chosen


@pytest.mark.parametrize(
    ("payload", "error_type"),
    [
        ({}, "missing"),
        ({"content": ""}, "value_error"),
        ({"content": "  \n\t "}, "value_error"),
        ({"content": 42}, "string_type"),
        ({"content": None}, "string_type"),
        ({"content": "x", "id": "not-a-uuid"}, "uuid_parsing"),
        ({"content": "x", "title": "unexpected"}, "extra_forbidden"),
    ],
)
def test_bad_documents_are_rejected(payload: dict[str, object], error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DocumentIn.model_validate(payload)
    assert caught.value.errors()[0]["type"] == error_type


def test_content_longer_than_the_limit_in_the_context_is_rejected() -> None:
    limits = document_limits(Settings(_env_file=None, max_document_chars=10))
    with pytest.raises(ValidationError, match="longer than 10 characters"):
        DocumentIn.model_validate({"content": "x" * 11}, context=limits)
    assert DocumentIn.model_validate({"content": "x" * 10}, context=limits).content == "x" * 10


def test_without_a_context_the_default_limit_holds() -> None:
    default = Settings(_env_file=None).max_document_chars
    assert len(DocumentIn(content="x" * default).content) == default
    with pytest.raises(ValidationError, match=f"longer than {default} characters"):
        DocumentIn(content="x" * (default + 1))


def test_queued_document_round_trips_through_a_message() -> None:
    queued = QueuedDocument(id=uuid.uuid4(), content="é", version=7, accepted_at=utcnow())
    assert QueuedDocument.model_validate(queued.to_message()) == queued


def test_naive_timestamps_read_back_as_utc() -> None:
    naive = utcnow().replace(tzinfo=None)
    out = DocumentOut(
        id=uuid.uuid4(),
        content="x",
        category="tech",
        confidence=0.9,
        model_version="v",
        version=1,
        created_at=naive,
        updated_at=naive,
    )
    assert out.created_at.utcoffset() is not None
    assert out.model_dump(mode="json")["created_at"].endswith("Z")


def test_the_whitespace_of_the_schema_is_pythons() -> None:
    """`_SPACE` spells out `str.isspace`, so blank means the same to the check and the pattern."""
    not_space = re.compile(f"[^{schemas._SPACE}]")
    assert [c for c in range(sys.maxunicode + 1) if not not_space.match(chr(c))] == [
        c for c in range(sys.maxunicode + 1) if chr(c).isspace()
    ]


@given(st.text(alphabet=st.sampled_from(" \t\n\x00\x1c\x85\u3000\ufeffa\xe9\U0001f600")))
def test_the_content_pattern_says_what_the_validator_does(content: str) -> None:
    """JSON Schema's `pattern` matches anywhere (`re.search`); ours is anchored."""
    try:
        DocumentIn(content=content)
    except ValidationError:
        accepted = False
    else:
        accepted = True
    assert (re.search(schemas.CONTENT_PATTERN, content) is not None) == accepted


def test_every_cursor_handed_out_has_the_declared_format() -> None:
    for document_id in (uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.uuid4()):
        cursor = encode_cursor(document_id)
        assert re.fullmatch(schemas.CURSOR_PATTERN, cursor)
        assert decode_cursor(cursor) == document_id
