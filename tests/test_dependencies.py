"""pyproject's dependencies match what the code imports, and requirements.lock installs them.

The imports are read from the source (AST), including packages located with
``importlib.util.find_spec("name")`` (read for their files, not imported).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions, requires
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ["sail_core", "serving", "data_contracts", "dags"]
TRITON_DIRS = ["serving/backend", "sail_core/preprocess"]  # what runs inside tritonserver (its own venv)
FIRST_PARTY = {"sail_core", "serving", "data_contracts", "dags", "tests", "bench"}

# import name -> distribution name, where they differ other than by "_" vs "-"
DISTRIBUTION_OF = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "google.protobuf": "protobuf",
    "airflow": "apache-airflow",
    "livekit": "livekit-wakeword",
    "faiss": "faiss-cpu",
    "ot": "POT",
    "sklearn": "scikit-learn",
}
# declared, needed, and never imported by name
NOT_IMPORTED = {
    "dvc": "run as the `dvc` program (sail_core/pipeline/versioning.py, dvc.yaml)",
    "pyarrow": "the parquet engine behind pandas.read_parquet / DataFrame.to_parquet",
}
DEV_NOT_IMPORTED = {
    "pytest-randomly": "a pytest plugin: shuffles the test order",
    "import-linter": "run as `lint-imports` (tests/test_layers.py)",
    "pytest-xdist": "a pytest plugin: `make test` runs the suite on 2 worker processes",
    "accelerate": "sentence-transformers' trainer needs it at run time (bench/train_throughput.py)",
}
# imported inside tritonserver but not pip-installed into its venv
TRITON_PROVIDED = {"triton_python_backend_utils": "the python backend provides it"}
TRITON_UNUSED = {"livekit": "speech_model_paths() is the fallback when no model files are given; "
                            "the backend passes the export folder's copies of the speech models"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    """``"tritonclient[http,grpc]==2.73.0"`` -> ``"tritonclient"``."""
    return _norm(re.split(r"[\s\[<>=!~;]", spec.strip(), maxsplit=1)[0])


def _third_party_imports(folders: list[str]) -> dict[str, set[str]]:
    """Top-level third-party import names (``google.protobuf`` kept whole) -> files that use them."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            names = []
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names += [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.append(node.module)
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
                      in ("find_spec", "import_module") and node.args
                      and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                    names.append(node.args[0].value)
            for name in names:
                parts = name.split(".")
                top = ".".join(parts[:2]) if parts[0] == "google" else parts[0]
                local = ((path.parent / f"{parts[0]}.py").exists()  # a sibling module (serving/backend)
                         or (REPO / "tests" / f"{parts[0]}.py").exists())  # a tests helper (tests is on the path)
                if parts[0] in sys.stdlib_module_names or parts[0] in FIRST_PARTY or local:
                    continue
                found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def _distribution(import_name: str) -> str:
    return _norm(DISTRIBUTION_OF.get(import_name, import_name))


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def test_every_import_is_declared_and_every_declared_package_is_used():
    imports = _third_party_imports(PACKAGE_DIRS)
    for name in TRITON_PROVIDED:
        imports.pop(name, None)
    declared = {_requirement_name(s) for s in _project()["dependencies"]}
    used = {_distribution(name): files for name, files in imports.items()}
    undeclared = {dist: sorted(files) for dist, files in used.items() if dist not in declared}
    assert not undeclared, (f"imported but not in pyproject's [project] dependencies: {undeclared}; add them "
                            "(or map the import name to its distribution in DISTRIBUTION_OF)")
    unused = declared - set(used) - set(NOT_IMPORTED)
    assert not unused, (f"declared in pyproject but imported nowhere in {PACKAGE_DIRS}: {sorted(unused)}; "
                        "remove them, or list them in NOT_IMPORTED with the reason")
    assert set(NOT_IMPORTED) <= declared


def _provides(dist: str, providers: set[str]) -> bool:
    """``dist`` ships the import, or is a meta-package that requires a distribution that does
    (``apache-airflow`` -> ``apache-airflow-core``)."""
    if dist in providers:
        return True
    direct = {_requirement_name(r) for r in requires(dist) or [] if "extra ==" not in r}
    return bool(direct & providers)


def test_the_import_name_table_names_the_installed_distributions():
    installed = {name: {_norm(d) for d in dists} for name, dists in packages_distributions().items()}
    imports = _third_party_imports(PACKAGE_DIRS)
    for name in set(imports) - set(TRITON_PROVIDED):
        providers = installed.get(name.split(".")[0], set())
        assert _provides(_distribution(name), providers), (
            f"import {name!r} ({sorted(imports[name])[0]}) comes from {sorted(providers)}, "
            f"not {_distribution(name)!r}: fix DISTRIBUTION_OF")


def test_tests_and_benchmarks_import_only_declared_packages_and_dev_holds_the_rest():
    project = _project()
    main = {_requirement_name(s) for s in project["dependencies"]}
    dev = {_requirement_name(s) for s in project["optional-dependencies"]["dev"]}
    used = {_distribution(name) for name in _third_party_imports(["tests", "bench"])}
    assert used <= main | dev, f"tests/bench import undeclared packages: {sorted(used - main - dev)}; add them to dev"
    assert dev - used - set(DEV_NOT_IMPORTED) == set(), "dev lists packages no test or benchmark uses"
    assert not dev & main, f"{sorted(dev & main)} are in both dependencies and dev"


def test_the_lock_installs_every_declared_package_at_its_pin():
    project = _project()
    pins = _lock()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        name = _requirement_name(spec)
        assert name in pins, f"{name} ({spec!r} in pyproject) is missing from requirements.lock (installed --no-deps)"
        exact = re.search(r"==\s*([^\s;,]+)", spec)
        if exact:  # the lock may carry a local build tag: torch==2.13.0 -> 2.13.0+cpu
            assert pins[name].split("+")[0] == exact.group(1), f"pyproject pins {spec!r} but requirements.lock has {pins[name]}"


def test_the_triton_runtime_requirements_cover_what_runs_inside_tritonserver():
    pinned = {}
    for line in (REPO / "serving" / "triton-requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pinned[_norm(name)] = version
    imports = _third_party_imports(TRITON_DIRS)
    missing = {_distribution(n): sorted(f) for n, f in imports.items()
               if n not in TRITON_PROVIDED and n not in TRITON_UNUSED and _distribution(n) not in pinned}
    assert not missing, f"imported inside Triton but not in serving/triton-requirements.txt: {missing}"
    assert "torch" not in pinned and int(pinned["numpy"].split(".")[0]) < 2
