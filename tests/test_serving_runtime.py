"""The Triton runtime's pinned packages come from the requirements file shipped in serving/."""

from __future__ import annotations

import re

import pytest

from serving.runtime import REQUIREMENTS, RuntimeSetupError, pinned_requirements


def test_shipped_requirements_pin_exact_versions_with_numpy_below_2():
    pinned = pinned_requirements()
    assert REQUIREMENTS.name == "triton-requirements.txt" and REQUIREMENTS.parent.name == "serving"
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[0-9][0-9A-Za-z.+\-]*", line) for line in pinned), pinned
    versions = dict(line.split("==") for line in pinned)
    assert {"nvidia-pytriton", "numpy", "onnxruntime", "tokenizers", "pillow"} <= set(versions)
    assert int(versions["numpy"].split(".")[0]) < 2  # the python-backend stub breaks under numpy 2
    assert "torch" not in versions


def test_comments_and_blank_lines_do_not_count(tmp_path):
    path = tmp_path / "req.txt"
    path.write_text("# header\n\nnumpy==1.26.4  # below 2\n  pillow==13.0.0\n")
    assert pinned_requirements(path) == ["numpy==1.26.4", "pillow==13.0.0"]


def test_an_empty_or_missing_file_is_refused_naming_it(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(RuntimeSetupError, match="empty.txt lists no packages"):
        pinned_requirements(empty)
    with pytest.raises(RuntimeSetupError, match="cannot read the Triton runtime requirements .*missing.txt"):
        pinned_requirements(tmp_path / "missing.txt")
