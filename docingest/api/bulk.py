"""Reading a bulk body: a JSON array or NDJSON, each item validated on its own.

Like Elasticsearch's `_bulk`, one bad item does not sink the others: it gets its own error and
the valid items are accepted. A JSON array that is valid throughout, the common case, is parsed
and validated in one pass by pydantic; only a body with errors is taken apart item by item.

A body is measured before anything is built from it: a few bytes of JSON (`{},`) make a Python
object of ~70 bytes, so an 8 MB body of empty objects would become 2.7 million of them (600 MB,
14 s of one API process). Large bodies are parsed in a thread, leaving the event loop free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio.to_thread
import orjson
from fastapi import HTTPException, Request, status
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
# Above this size a body is parsed in a worker thread: below it, parsing takes a few milliseconds
# and the thread hand-off would cost more than it saves.
THREAD_PARSE_BYTES = 1 << 20
# JSON values (containers and comma-separated elements) a document may account for: its object,
# the comma between its two members, the comma after it, and one to spare.
_VALUES_PER_DOCUMENT = 4
# A string (possessive: linear even on an unterminated one), a lone quote (an unterminated
# string: nothing after it is a value), or what starts or separates values.
_VALUE_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|"|[,\[{]', re.DOTALL)
_QUOTE = ord('"')
# An NDJSON line holds a document when it starts with a byte other than ASCII whitespace; as a
# pattern, the OpenAPI document says the body must have one.
NDJSON_PATTERN = r"[^ \t\n\r\f\v]"
_NDJSON_LINE = re.compile(NDJSON_PATTERN.encode() + rb"[^\r\n]*")


async def read_items(request: Request, *, max_items: int, limits: dict[str, int]) -> list[Item]:
    """`limits`: the validation context of `schemas.document_limits`."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    parse = partial(parse_items, body, content_type, max_items=max_items, limits=limits)
    if len(body) > THREAD_PARSE_BYTES:
        return await anyio.to_thread.run_sync(parse)
    return parse()


def parse_items(
    body: bytes, content_type: str, *, max_items: int, limits: dict[str, int]
) -> list[Item]:
    if not _values_within(body, max_items * _VALUES_PER_DOCUMENT + 1):
        raise _too_many(f"The body holds more JSON values than {max_items} documents")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in NDJSON_TYPES:
        try:
            documents = _ALL_DOCUMENTS.validate_json(body, context=limits)
        except ValidationError:
            pass  # something is wrong: find out what, item by item, below
        else:
            _check_count(len(documents), max_items)
            return [Item(index, document, None) for index, document in enumerate(documents)]
    raw = _ndjson(body, max_items) if media_type in NDJSON_TYPES else _json_array(body)
    _check_count(len(raw), max_items)
    return [_validate(index, value, limits) for index, value in enumerate(raw)]


def _check_count(count: int, max_items: int) -> None:
    if not count:
        raise _body_error("no_documents", "The body holds no document")
    if count > max_items:
        raise _too_many(f"{count} documents in one request; the limit is {max_items}")


def _too_many(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail=detail)


def _values_within(body: bytes, budget: int) -> bool:
    """Whether parsing `body` builds at most about `budget` objects, found without building any.

    Byte counts give an upper bound, enough for most bodies; only when commas or brackets
    inside strings (or too many values) exceed it are the tokens walked, stopping at the
    budget, so a body of millions of values costs no more than one of `budget` values.
    """
    if body.count(b",") + body.count(b"{") + body.count(b"[") <= budget:
        return True
    for match in _VALUE_TOKEN.finditer(body):
        start, end = match.span()
        if body[start] != _QUOTE:
            budget -= 1
            if budget < 0:
                return False
        elif end - start == 1:
            return True
    return True


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


def _ndjson(body: bytes, max_items: int) -> list[Any]:
    """Each non-blank line is a document; a line that is not JSON is that item's error.

    Lines are found one at a time, and counted: blank lines cost nothing, and a body of more
    lines than `max_items` is refused before the rest are parsed.
    """
    values: list[Any] = []
    for line in _NDJSON_LINE.finditer(body):
        if len(values) == max_items:
            raise _too_many(f"More than {max_items} documents in one request")
        try:
            values.append(orjson.loads(line[0]))
        except orjson.JSONDecodeError as error:
            values.append(_Unparsable(f"JSON decode error: {error}"))
    return values


def _validate(index: int, value: Any, limits: dict[str, int]) -> Item:
    if isinstance(value, _Unparsable):
        error = {"type": "json_invalid", "loc": ["body", index], "msg": value.message}
        return Item(index, None, [error])
    try:
        return Item(index, DocumentIn.model_validate(value, context=limits), None)
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
