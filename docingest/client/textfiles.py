"""How users' text files are read, by `send` and `train` alike: one rule, stated in both --help.

UTF-8, with or without a byte order mark. Bytes that are not UTF-8 are refused, never replaced
or guessed at: a document full of U+FFFD would be stored and classified as if it were the
author's text, and nobody would learn that the file needed converting. `send` makes such a line
or file a reject, `train` stops with an error naming it; both go through `decode` or `Lines`.
"""

from __future__ import annotations

import codecs
from typing import IO, ClassVar

RULE = (
    "Text is read as UTF-8, with or without a byte order mark; a file or line that is not "
    "valid UTF-8 is refused with its name and line number, never repaired with replacement "
    "characters."
)
# A line over its limit is discarded in pieces of this size, never held whole.
_CHUNK = 1 << 16
_QUOTE = ord('"')


class UnreadableTextError(ValueError):
    """Bytes the rule refuses; `kind` names the reason in a rejects file's `errors`."""

    kind: ClassVar[str] = "unreadable"


class NotUTF8Error(UnreadableTextError):
    kind = "utf8_invalid"


class TooLongError(UnreadableTextError):
    kind = "too_long"


def decode(raw: bytes) -> str:
    """The rule for one file or line; NotUTF8Error says at which byte it breaks."""
    text = raw.removeprefix(codecs.BOM_UTF8)
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotUTF8Error(
            f"not UTF-8 text: byte 0x{text[error.start]:02x} at offset {error.start}"
        ) from None


class Lines:
    """The lines of a binary file, decoded by the rule, for the csv module and JSONL readers.

    A line that is not UTF-8, or longer than `max_bytes`, raises from `next()` once consumed,
    so that a reader may report it and go on: csv.reader starts afresh on its next call.
    `number` is the line last read. Quotes are counted, which tells where a CSV record spans
    several lines (a quoted field with line breaks): `record_line` is the first line of the
    record being read, the one to show a user, and after an error inside such a field
    `skip_record` passes the rest of it, instead of letting the csv module read the document's
    remaining lines as rows of their own.
    """

    def __init__(self, file: IO[bytes], max_bytes: int | None = None) -> None:
        self.file = file
        self.max_bytes = max_bytes
        self.number = 0
        self.record_line = 0
        self._quoted = False

    def __iter__(self) -> Lines:
        return self

    def __next__(self) -> str:
        limit = -1 if self.max_bytes is None else self.max_bytes + 2  # room for "\r\n"
        raw = self.file.readline(limit)
        if not raw:
            raise StopIteration
        self.number += 1
        if not self._quoted:
            self.record_line = self.number
        self._count_quotes(raw)
        if self.max_bytes is not None and len(raw.rstrip(b"\r\n")) > self.max_bytes:
            if not raw.endswith(b"\n"):
                self._discard_rest_of_line()
            raise TooLongError(f"line longer than {self.max_bytes:,} bytes")
        return decode(raw)

    def skip_record(self) -> None:
        """Pass the lines that still belong to a quoted field the csv module gave up on."""
        while self._quoted:
            try:
                next(self)
            except UnreadableTextError:
                continue
            except StopIteration:
                return

    def _discard_rest_of_line(self) -> None:
        while chunk := self.file.readline(_CHUNK):
            self._count_quotes(chunk)
            if chunk.endswith(b"\n"):
                return

    def _count_quotes(self, raw: bytes) -> None:
        if raw.count(_QUOTE) % 2:
            self._quoted = not self._quoted
