"""Write the validation report: ``validation_report.json`` and a short ``validation_report.md``."""

from __future__ import annotations

import json
import os
from pathlib import Path

JSON_NAME = "validation_report.json"
MD_NAME = "validation_report.md"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def to_markdown(report: dict) -> str:
    status = "PASSED" if report["passed"] else "BREACHED"
    lines = [
        f"# Data validation: {status}",
        "",
        f"Source `{report['source']}`; tolerance {report['tolerance']:.1%} of rows per table.",
        "",
        "| table | rows | clean | quarantined | failed expectations |",
        "|---|---:|---:|---:|---|",
    ]
    for name, t in report["tables"].items():
        failed = [f"{e['expectation']}({e['column'] or ''})" for e in t["expectations"] if not e["success"]]
        lines.append(f"| {name} | {t['rows']} | {t['clean']} | {t['quarantined']} | {', '.join(failed) or '-'} |")
    if report["breaches"]:
        lines += ["", "## Breaches", ""] + [f"- {b}" for b in report["breaches"]]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> Path:
    """Write both files into ``out``; returns the JSON path."""
    out = Path(out)
    _atomic_write(out / JSON_NAME, json.dumps(report, indent=2, default=str) + "\n")
    _atomic_write(out / MD_NAME, to_markdown(report))
    return out / JSON_NAME
