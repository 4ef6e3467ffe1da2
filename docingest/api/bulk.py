"""Reading a bulk body: a JSON array or NDJSON, each item validated on its own.

Like Elasticsearch's `_bulk`, one bad item does not sink the others: it gets its own error and
the valid items are accepted. A JSON array that is valid throughout, the common case, is parsed
and validated in one pass by pydantic; only a body with errors is taken apart item by item.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from docingest.schemas import DocumentIn

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


@dataclass(frozen=True, slots=True)
class Item:
    """One input item: a valid document or the errors that explain why it is not."""

    index: int
    document: DocumentIn | None
    errors: list[dict[str, Any]] | None


_ALL_DOCUMENTS = TypeAdapter(list[DocumentIn])


def parse_items(body: bytes, content_type: str, *, max_items: int) -> list[Item]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in NDJSON_TYPES:
        try:
            documents = _ALL_DOCUMENTS.validate_json(body)
        except ValidationError:
            pass  # something is wrong: find out what, item by item, below
        else:
            _check_count(len(documents), max_items)
            return [Item(index, document, None) for index, document in enumerate(documents)]
    raw = _ndjson(body) if media_type in NDJSON_TYPES else _json_array(body)
    _check_count(len(raw), max_items)
    return [_validate(index, value) for index, value in enumerate(raw)]


def _check_count(count: int, max_items: int) -> None:
    if not count:
        raise _body_error("no_documents", "The body holds no document")
    if count > max_items:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"{count} documents in one request; the limit is {max_items}",
        )


def _json_array(body: bytes) -> list[Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _body_error("json_invalid", f"JSON decode error: {error}") from None
    if not isinstance(value, list):
        raise _body_error("list_type", "The body must be a JSON array of documents (or NDJSON)")
    return value


class _Unparsable:
    def __init__(self, message: str) -> None:
        self.message = message


def _ndjson(body: bytes) -> list[Any]:
    """Each non-blank line is a document; a line that is not JSON is that item's error."""
    values: list[Any] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        try:
            values.append(orjson.loads(line))
        except orjson.JSONDecodeError as error:
            values.append(_Unparsable(f"JSON decode error: {error}"))
    return values


def _validate(index: int, value: Any) -> Item:
    if isinstance(value, _Unparsable):
        error = {"type": "json_invalid", "loc": ["body", index], "msg": value.message}
        return Item(index, None, [error])
    try:
        return Item(index, DocumentIn.model_validate(value), None)
    except ValidationError as error:
        details = error.errors(include_url=False, include_context=False, include_input=False)
        return Item(index, None, [{**d, "loc": ["body", index, *d["loc"]]} for d in details])


def request_validation_error(error: ValidationError) -> RequestValidationError:
    """A pydantic error on the whole body, in FastAPI's 422 format (`loc` starts with "body").

    Without the offending input: it may be bytes that are not UTF-8, or a float (`1e999`) that
    JSON cannot render, and an error answer must never fail.
    """
    details = error.errors(include_url=False, include_context=False, include_input=False)
    return RequestValidationError([d | {"loc": ("body", *d["loc"])} for d in details])


def _body_error(error_type: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"type": error_type, "loc": ["body"], "msg": message}],
    )
