"""Search-query texts for the ``q2i`` dataset, built from an item's metadata.

A query names what a user would type to find the item: its genres, its
decade or year, and a keyword from its title (never the whole title), e.g.
``"90s comedy romance"``, ``"a thriller from 1997"``, ``"heat crime movie"``.
Templates are picked with a seeded generator, so the output is deterministic.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_STOPWORDS = {
    "the", "a", "an", "and", "of", "in", "on", "to", "for", "with", "at", "by", "from", "is",
    "it", "my", "me", "you", "your", "his", "her", "i", "ii", "iii", "la", "le", "les", "el",
    "de", "der", "die", "das", "du", "un", "une", "part", "but", "not", "all", "no", "be", "or",
}
_WORD = re.compile(r"[a-z][a-z'\-]*[a-z]|[a-z]")


def title_keywords(title: str) -> list[str]:
    """Content words of a title (lower case, 4+ letters, no stop words), longest first.

    Text in brackets (an original-language title) and trailing articles
    (``"Usual Suspects, The"``) are ignored.
    """
    main = re.sub(r"\(.*?\)", " ", str(title)).lower()
    words = [w.strip("'-") for w in _WORD.findall(main)]
    words = [w for w in words if len(w) >= 4 and w not in _STOPWORDS]
    seen: dict[str, None] = dict.fromkeys(words)
    return sorted(seen, key=lambda w: (-len(w), words.index(w)))


def decade(year: int) -> str:
    """``1995 -> "90s"``, ``1975 -> "70s"``, ``2001 -> "2000s"``, ``1930 -> "1930s"``."""
    d = (int(year) // 10) * 10
    if 1950 <= d < 2000:
        return f"{d % 100:02d}s"
    return f"{d}s"


def _labels(genres: list[str]) -> list[str]:
    return [g.strip().lower() for g in genres if g and g.strip()]


def candidate_queries(title: str, year, genres: list[str]) -> list[str]:
    """Every query template that this item's metadata can fill (may be empty)."""
    g = _labels(genres)
    has_year = year is not None and bool(pd.notna(year))
    kw = title_keywords(title)
    out: list[str] = []
    if has_year and len(g) >= 2:
        out.append(f"{decade(year)} {g[0]} {g[1]}")
    if has_year and g:
        out.append(f"a {g[-1]} movie from {int(year)}")
        out.append(f"{g[0]} movies of the {decade(year)}")
    if kw and g:
        out.append(f"{kw[0]} {g[0]} movie")
    if kw and has_year:
        out.append(f"{kw[0]} film {int(year)}")
    title_l = str(title).strip().lower()
    return [q for q in dict.fromkeys(out) if q != title_l]


def pick_queries(title: str, year, genres: list[str], k: int, rng: np.random.Generator) -> list[str]:
    """Up to ``k`` distinct queries for one item, chosen by ``rng`` among :func:`candidate_queries`."""
    cands = candidate_queries(title, year, genres)
    if len(cands) <= k:
        return cands
    idx = sorted(rng.choice(len(cands), size=k, replace=False))
    return [cands[i] for i in idx]
