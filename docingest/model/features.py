"""Words and TF-IDF weights with numpy alone: the one implementation behind training
(`vectorizer.WordVectorizer`, inside a scikit-learn pipeline) and scoring (`scoring.Scorer`, in
worker processes that never import scikit-learn), so both see the same words and compute the
same weights, bit for bit.

Tokenizing is the whole cost of classifying a document: C string operations do it (lowercase,
map every byte that is not a letter to a space, split) and the counting is done with numpy over
the whole batch. The tokens are exactly those of the regex `[a-z]+` on the lowercased text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import numpy.typing as npt

_LETTERS_ONLY = bytes(byte if ord("a") <= byte <= ord("z") else ord(" ") for byte in range(256))


def words(text: str) -> list[str]:
    """Runs of ASCII letters after lowercasing; every other character separates words.

    Non-ASCII characters become "?" on encoding and so separate words too, as in `[a-z]+`.
    """
    return _letters(text).decode("ascii").split()


def _word_bytes(text: str) -> list[bytes]:
    """`words` left as bytes: `tfidf` looks them up as they are, without making a str of each
    (a sixth of its time)."""
    return _letters(text).split()


def _letters(text: str) -> bytes:
    return text.lower().encode("ascii", "replace").translate(_LETTERS_ONLY)


@dataclass(frozen=True, slots=True)
class Weights:
    """A batch's TF-IDF weights as compressed sparse rows: document i's terms are
    `columns[indptr[i]:indptr[i + 1]]`, in increasing order, their weights the same slice of
    `data`."""

    data: npt.NDArray[np.float64]
    columns: npt.NDArray[np.intp]
    indptr: npt.NDArray[np.intp]


def tfidf(
    texts: Sequence[str], vocabulary: Mapping[bytes, int], idf: npt.NDArray[np.float32]
) -> Weights:
    """Sublinear TF times IDF, L2-normalized per document; words outside `vocabulary` are
    dropped. A dict lookup per token, then numpy over the whole batch: sort and count.

    In float64, though float32 would halve a batch's features: scikit-learn fits float32
    features with float32 weights and computes their probabilities in float32, adding in an
    order the scorer's numpy cannot follow (2e-7 apart, measured); in float64 both paths agree
    to 1e-9 (tests/unit/test_scoring.py).
    """
    rows, columns, counts = _count(texts, vocabulary, len(idf))
    data = (np.log(counts) + 1) * idf[columns].astype(np.float64)
    # L2 norm per row; a row without known words has no entries to divide.
    norms = np.sqrt(np.bincount(rows, weights=data * data, minlength=len(texts)))
    data /= norms[rows]
    indptr = np.searchsorted(rows, np.arange(len(texts) + 1))
    return Weights(data=data, columns=columns, indptr=indptr)


def _count(
    texts: Sequence[str], vocabulary: Mapping[bytes, int], terms: int
) -> tuple[npt.NDArray[np.intp], ...]:
    """(document, term, count) of every known term, sorted by document then term.

    One document's words at a time: a batch's all at once held 9 MB more for 500 BBC articles
    (tracemalloc; a worker process runs two batches at once) to save 4 % of the time.
    """
    lookup = vocabulary.get
    found = [np.fromiter(map(lookup, _word_bytes(text), repeat(-1)), np.intp) for text in texts]
    lengths = np.fromiter(map(len, found), np.intp, len(found))
    rows = np.repeat(np.arange(len(found), dtype=np.intp), lengths)
    looked_up = np.concatenate([np.empty(0, np.intp), *found])
    known = looked_up >= 0
    keys = rows[known] * terms + looked_up[known]
    keys.sort()
    starts = np.flatnonzero(np.diff(keys, prepend=-1))
    counts = np.diff(starts, append=len(keys))
    document, term = np.divmod(keys[starts], terms)
    return document, term, counts
