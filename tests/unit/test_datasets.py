import codecs
import csv
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from sklearn.utils import Bunch

from docingest.model.datasets import DatasetError, load_bbc, load_dataset

BBC_SIZES = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
ROWS = [
    ("the striker scored a goal", "sports"),
    ("shares fell on the stock market", "business"),
    ("a new phone with a fast chip", "tech"),
    ("the coach praised the team", "sports"),
    ("profits rose, analysts said", "business"),
    ("software update for the laptop", "tech"),
]


def write_csv(path: Path, rows: list[dict[str, str]], fields: tuple[str, ...]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(record) for record in records) + b"\n")
    return path


def records() -> list[dict[str, str]]:
    return [{"content": content, "category": category} for content, category in ROWS]


def test_bbc_has_every_document_with_its_folder_label() -> None:
    dataset = load_dataset("bbc")
    assert dataset.name == "bbc"
    assert len(dataset.texts) == len(dataset.labels) == 2225
    assert Counter(dataset.labels) == BBC_SIZES
    assert all(text.strip() for text in dataset.texts)
    assert not any("\ufffd" in text for text in dataset.texts)
    assert dataset.labels == sorted(dataset.labels)
    assert (dataset.texts, dataset.labels) == load_bbc()


def test_folder_of_category_folders(tmp_path: Path) -> None:
    for index, (content, category) in enumerate(ROWS):
        (tmp_path / "data" / category).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / category / f"{index}.txt").write_text(content, encoding="utf-8")
    (tmp_path / "data" / "tech" / "notes.md").write_text("not a document")
    (tmp_path / "data" / "README.txt").write_text("not in a category folder")
    (tmp_path / "data" / "business" / "bom.txt").write_bytes(
        codecs.BOM_UTF8 + "café sales up".encode()
    )
    dataset = load_dataset(str(tmp_path / "data"))
    assert dataset.name == "data"
    assert Counter(dataset.labels) == {"business": 3, "sports": 2, "tech": 2}
    assert "café sales up" in dataset.texts
    assert "not a document" not in dataset.texts
    assert load_dataset(str(tmp_path / "data")) == dataset


def test_folder_with_an_empty_file_names_it(tmp_path: Path) -> None:
    for category in ("a", "b"):
        (tmp_path / category).mkdir()
        (tmp_path / category / "1.txt").write_text("some words")
        (tmp_path / category / "2.txt").write_text("more words")
    (tmp_path / "b" / "3.txt").write_text("  \n")
    with pytest.raises(DatasetError, match=r"b/3\.txt: empty content"):
        load_dataset(str(tmp_path))


def test_folder_with_a_non_utf8_file_names_it(tmp_path: Path) -> None:
    for category in ("a", "b"):
        (tmp_path / category).mkdir()
        (tmp_path / category / "1.txt").write_text("some words")
        (tmp_path / category / "2.txt").write_text("more words")
    (tmp_path / "b" / "latin1.txt").write_bytes("caf\xe9 sales up".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"b/latin1\.txt: not UTF-8 text: byte 0xe9"):
        load_dataset(str(tmp_path))


def test_folder_without_documents(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"no category sub-folder holds any \.txt file"):
        load_dataset(str(tmp_path))


def test_csv_file_with_quoted_newlines_and_extra_columns(tmp_path: Path) -> None:
    rows = [{**record, "id": str(i)} for i, record in enumerate(records())]
    rows[0]["content"] = 'line one\nline two, with "quotes"'
    path = write_csv(tmp_path / "train.csv", rows, ("id", "content", "category"))
    dataset = load_dataset(str(path))
    assert dataset.name == "train.csv"
    assert dataset.texts[0] == 'line one\nline two, with "quotes"'
    assert dataset.labels == [category for _, category in ROWS]


def test_csv_without_a_column_says_which(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", [{"content": "x"}], ("content",))
    with pytest.raises(DatasetError, match=r"bad\.csv:1: missing column\(s\): category"):
        load_dataset(str(path))


def test_csv_empty_content_names_the_line(tmp_path: Path) -> None:
    rows = records()
    rows[1]["content"] = "   "
    path = write_csv(tmp_path / "bad.csv", rows, ("content", "category"))
    with pytest.raises(DatasetError, match=r"bad\.csv:3: empty content"):
        load_dataset(str(path))


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train.csv", records(), ("content", "category"))
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert load_dataset(str(path)).texts == [content for content, _ in ROWS]


def test_csv_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "bad.csv", records(), ("content", "category"))
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(3, "caf\xe9,business\r\n".encode("latin-1"))
    path.write_bytes(b"".join(lines))
    with pytest.raises(DatasetError, match=r"bad\.csv:4: unreadable CSV: not UTF-8 text"):
        load_dataset(str(path))


def test_jsonl_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", records())
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(2, '{"content": "caf\xe9", "category": "business"}\n'.encode("latin-1"))
    path.write_bytes(b"".join(lines))
    with pytest.raises(DatasetError, match=r"bad\.jsonl:3: not UTF-8 text: byte 0xe9"):
        load_dataset(str(path))


def test_jsonl_file_skips_blank_lines(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", records())
    path.write_bytes(path.read_bytes() + b"\n  \n")
    dataset = load_dataset(str(path))
    assert dataset.texts == [content for content, _ in ROWS]
    assert dataset.labels == [category for _, category in ROWS]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"content": "words"}, r"bad\.jsonl:3: missing field\(s\): category"),
        ({"content": "", "category": "tech"}, r"bad\.jsonl:3: empty content"),
        ({"content": 7, "category": "tech"}, r"bad\.jsonl:3: content must be a string, not int"),
        ({"content": "words", "category": None}, r"bad\.jsonl:3: category must be a string"),
        (["content", "category"], r"bad\.jsonl:3: expected a JSON object"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path: Path, bad: object, message: str) -> None:
    lines: list[object] = list(records())
    lines.insert(2, bad)
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(write_jsonl(tmp_path / "bad.jsonl", lines)))


def test_jsonl_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", records())
    path.write_bytes(path.read_bytes() + b'{"content": "unterminated\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl:7: invalid JSON"):
        load_dataset(str(path))


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"absent\.csv: no such file or folder"):
        load_dataset(str(tmp_path / "absent.csv"))


def test_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_bytes(b"PK")
    with pytest.raises(DatasetError, match="unsupported format"):
        load_dataset(str(path))


def test_a_single_category_is_refused(tmp_path: Path) -> None:
    rows = [{"content": "text", "category": "only"}] * 5
    path = write_jsonl(tmp_path / "one.jsonl", list(rows))
    with pytest.raises(DatasetError, match="at least 2 categories, found only"):
        load_dataset(str(path))


def test_a_category_too_small_to_stratify_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "rare.jsonl", [*records(), {"content": "x", "category": "rare"}])
    with pytest.raises(DatasetError, match=r"fewer than 2 examples.*: rare"):
        load_dataset(str(path))


def write_20newsgroups_cache(data_home: Path) -> None:
    """The file fetch_20newsgroups reads before downloading: a zlib-compressed pickle."""

    def subset(texts: list[str], targets: list[int]) -> Bunch:
        return Bunch(
            data=texts,
            target=np.array(targets),
            target_names=["comp.graphics", "rec.autos"],
            filenames=np.array([f"{i}.txt" for i in range(len(texts))]),
        )

    cache = {
        "train": subset(["pixels and shaders", "engines and wheels", "render a mesh"], [0, 1, 0]),
        "test": subset(["brakes and tyres", "vector graphics"], [1, 0]),
    }
    path = data_home / "20news-bydate_py3.pkz"
    path.write_bytes(codecs.encode(pickle.dumps(cache), "zlib_codec"))


def test_20newsgroups_reads_the_fetchers_cache(tmp_path: Path) -> None:
    write_20newsgroups_cache(tmp_path)
    dataset = load_dataset("20newsgroups", data_home=tmp_path)
    assert dataset.name == "20newsgroups"
    assert dataset.texts == [
        "pixels and shaders",
        "engines and wheels",
        "render a mesh",
        "brakes and tyres",
        "vector graphics",
    ]
    assert dataset.labels == [
        "comp.graphics",
        "rec.autos",
        "comp.graphics",
        "rec.autos",
        "comp.graphics",
    ]


def test_20newsgroups_fetch_failure_is_a_dataset_error(tmp_path: Path) -> None:
    """A file where the data home should be fails as an offline download does: an OSError."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    with pytest.raises(DatasetError, match=r"20newsgroups is not cached in .*not-a-folder"):
        load_dataset("20newsgroups", data_home=blocked)
