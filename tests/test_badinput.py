"""The bad-input corpus (``tests/badinput/``): every case gets a clear error, and nothing good is lost.

One parametrised test runs each case through its category's runner (``tests/badinput/<category>.py``),
which performs it against the real thing (`sail` in this process, Great Expectations, a real
tritonserver on 127.0.0.1) and checks its side conditions (the quarantine holds exactly the bad rows
and their dependents; the server still serves). This test checks the message the user saw contains
the case's ``expect``. The README's "What happens with bad input" table is generated from the corpus
(``python -m tests.badinput.readme``) and checked here to be current.
"""

from __future__ import annotations

import importlib

import pytest

from tests.badinput.common import CATEGORIES, load_cases
from tests.badinput.serving import serving_corpus  # noqa: F401  (one tritonserver for all serving cases)

CASES = load_cases()


def test_the_corpus_covers_every_category_with_at_least_40_cases():
    by_category = {c: sum(case.category == c for case in CASES) for c in CATEGORIES}
    assert len(CASES) >= 40, by_category
    assert all(by_category.values()), f"a category has no case: {by_category}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path, request):
    runner = importlib.import_module(f"tests.badinput.{case.category}")
    message = runner.run(case, tmp_path, request)
    assert case.spec["expect"].lower() in " ".join(message.split()).lower(), (
        f"{case.id} ({case.spec['what']}): expected a message containing {case.spec['expect']!r}, got: {message}")


def test_readme_table_is_generated_from_the_corpus():
    from tests.badinput.readme import is_current

    assert is_current(), "the README's bad-input table is stale: run `.venv/bin/python -m tests.badinput.readme`"
