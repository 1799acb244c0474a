"""The README's "What happens with bad input" table, generated from the corpus.

``python -m tests.badinput.readme`` rewrites the part of README.md between the markers;
``tests/test_badinput.py`` checks it is current.
"""

from __future__ import annotations

from tests.badinput.common import CATEGORIES, load_cases
from tests.project import REPO

README = REPO / "README.md"
START, END = "<!-- badinput:start -->", "<!-- badinput:end -->"
TITLES = {"tables": "Tables (`sail validate`)", "media": "Media files (`sail validate`)",
          "config": "Configuration (`params.yaml`, `--profile`, `--set`)", "cli": "Command line",
          "serving": "Serving (raw requests to Triton)"}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def table() -> str:
    cases = load_cases()
    lines = [START, "", f"{len(cases)} cases in `tests/badinput/`, each run by `tests/test_badinput.py`; the message column "
             "is the substring the test requires in what the user sees.", ""]
    for category in CATEGORIES:
        rows = [c for c in cases if c.category == category]
        lines += [f"**{TITLES[category]}**", "", "| case | what is wrong | the user sees (contains) |", "|---|---|---|"]
        lines += [f"| `{c.name}` | {_cell(c.spec['what'])} | `{_cell(c.spec['expect'])}` |" for c in rows]
        lines.append("")
    return "\n".join(lines + [END])


def _split(text: str) -> tuple[str, str]:
    if START not in text or END not in text:
        raise ValueError(f"{README} has no {START} ... {END} markers; add them where the table goes")
    head, rest = text.split(START, 1)
    return head, rest.split(END, 1)[1]


def is_current() -> bool:
    head, tail = _split(README.read_text())
    return README.read_text() == head + table() + tail


def main() -> None:
    head, tail = _split(README.read_text())
    README.write_text(head + table() + tail)
    print(f"wrote the bad-input table ({len(load_cases())} cases) into {README}")


if __name__ == "__main__":
    main()
