"""``sail``: the command line. Each pipeline verb is a thin call into ``sail_core.pipeline``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SAIL-Embedding: train, evaluate and serve omni-modal embeddings.")
data_app = typer.Typer(no_args_is_help=True, help="Build or import the tables the pipeline trains on.")
serve_app = typer.Typer(no_args_is_help=True, help="Run the local Triton server (127.0.0.1).")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved configuration.")
runs_app = typer.Typer(no_args_is_help=True, help="Pipeline runs as MLflow records them.")
app.add_typer(data_app, name="data")
app.add_typer(serve_app, name="serve")
app.add_typer(config_app, name="config")
app.add_typer(runs_app, name="runs")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class State:
    params: Optional[Path] = None
    profile: Optional[str] = None
    overrides: dict[str, Any] = {}
    workdir: Optional[Path] = None
    dry_run: bool = False


def _parse_sets(sets: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in sets:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects KEY=VALUE (e.g. model.max_length=32 or gate.metrics.0.min_delta=0.02), "
                                     f"got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


@app.callback()
def main(
    params: Optional[Path] = typer.Option(None, "--params", help="params.yaml to read (default: the repository's, or $SAIL_PARAMS)"),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="profile in params.yaml (default: its `profile` key, or $SAIL_PROFILE)"),
    set_: list[str] = typer.Option([], "--set", help=(
        "override a config key, KEY=VALUE (repeatable); VALUE is YAML. KEY is a dotted path, list items by index: "
        "model.max_length=32, gate.metrics.0.min_delta=0.02, "
        "'gate.metrics=[{metric: eval.i2i.recall_at_10, min_delta: 0.02}]'; an unknown key is refused")),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="project root holding data/, models/, reports/ (default: the repository)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="load and check the configuration and arguments, print the call the verb would make, and stop"),
) -> None:
    State.params, State.profile, State.workdir, State.dry_run = params, profile, workdir, dry_run
    State.overrides = _parse_sets(set_)


def _cfg():
    from sail_core.config import load_config

    return load_config(State.params, State.profile, State.overrides)


def _wd():
    from sail_core.paths import workdir

    return workdir(State.workdir)


def _ws(wd=None):
    """The project workspace: the DVC project's data/, models/, reports/ (what `dvc repro` runs in)."""
    from sail_core.pipeline.workspace import project

    return project(wd or _wd())


def _describe(fn, args: tuple, kwargs: dict) -> str:
    shown = [type(a).__name__ if hasattr(a, "model_dump") else repr(a) for a in args]
    shown += [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{fn.__module__}.{fn.__qualname__}({', '.join(shown)})"


def _run(fn, *args, **kwargs):
    """Run a step; turn expected failures into a one-screen message and a non-zero exit.

    With ``--dry-run`` every call but loading the configuration is printed instead of made, and the
    verb stops there (exit 0): the configuration and the arguments have been checked by then."""
    from sail_core.config import ConfigError

    if State.dry_run and fn not in (_cfg, _wd) and not fn.__module__.startswith("sail_core.config"):  # config calls only check
        out.print(f"dry run (profile {_cfg().profile!r}): would call {_describe(fn, args, kwargs)}")
        raise typer.Exit(0)
    try:
        result = fn(*args, **kwargs)
    except ConfigError as e:
        err.print(f"[red]configuration error[/]\n{e}")
        raise typer.Exit(2)
    except (ValueError, RuntimeError, OSError, LookupError) as e:
        # Contract breaches, gate misses, DVC/Triton failures, unknown items: the message names the problem and the fix.
        err.print(f"[red]{type(e).__name__}[/]: {e.args[0] if isinstance(e, KeyError) and e.args else e}")
        raise typer.Exit(1)
    return result


def _print(result: Any) -> None:
    if result is not None:
        out.print_json(json.dumps(result, default=str))


# ----------------------------------------------------------------- config
@config_app.command("show")
def config_show(
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="profile to show (default: as for every verb)"),
    resolved: bool = typer.Option(False, "--resolved", help="print every key, defaults included (params.resolved.yaml, which DVC reads, is this plus the training-stage chain: `sail config resolve`)"),
):
    """Print the configuration of the selected profile (--profile, --set), merged over `base`, as YAML."""
    from sail_core.config import dump_config

    State.profile = profile or State.profile
    print(_run(dump_config, _run(_cfg), resolved), end="")


@config_app.command("resolve")
def config_resolve(
    profile: Optional[str] = typer.Option(None, "--profile", "-p", help="profile to resolve (default: as for every verb)"),
    check: bool = typer.Option(False, "--check", help="write nothing; exit 1 when params.resolved.yaml is not up to date"),
):
    """Write params.resolved.yaml, the params file dvc.yaml reads: the resolved configuration of the
    selected profile plus the training-stage chain. Run it before `dvc repro` after changing params.yaml
    or to reproduce another profile."""
    from sail_core.pipeline import dvc_params

    State.profile = profile or State.profile
    cfg, root = _run(_cfg), _wd().root
    if check:
        path = root / dvc_params.RESOLVED_PARAMS
        if not dvc_params.is_current(cfg, root):
            err.print(f"[red]{path} is not the resolved configuration of profile {cfg.profile!r}[/]; "
                      f"run `sail --profile {cfg.profile} config resolve`")
            raise typer.Exit(1)
        out.print(f"{path} is up to date (profile {cfg.profile!r})")
        return
    path = _run(dvc_params.write_resolved, cfg, root)
    out.print(f"wrote {path} (profile {cfg.profile!r}; DVC train stages: "
              f"{', '.join(dvc_params.train_stage_names(cfg))})")


# ------------------------------------------------------------------- data
@data_app.command("demo")
def data_demo(out_dir: Path = typer.Option(..., "--out", help="folder to write items, interactions and pairs into")):
    """Build the demo catalogue from MovieLens-100k (read from the installed recbole package)."""
    from sail_core.data.demo import build_demo

    cfg = _run(_cfg)
    _print(_run(build_demo, out_dir, cfg.data))


@data_app.command("import")
def data_import(
    items: Path = typer.Option(..., "--items", help="items CSV or parquet"),
    interactions: Path = typer.Option(..., "--interactions", help="interactions CSV or parquet"),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="folder of pair tables; derived from interactions when absent"),
    out_dir: Path = typer.Option(..., "--out", help="folder to write the imported tables into"),
):
    """Import your own tables in the documented schema (see README, 'Bring your own data')."""
    from sail_core.data.importer import import_tables

    cfg = _run(_cfg)
    _print(_run(import_tables, items, interactions, pairs, out_dir, cfg.data))


# --------------------------------------------------------------- pipeline
@app.command()
def ingest():
    """Write the raw tables to data/raw (demo catalogue or your files, per params.yaml data.source)."""
    from sail_core import pipeline

    _print(_run(pipeline.ingest, _run(_cfg), _ws()))


@app.command()
def validate(
    data: Optional[Path] = typer.Option(None, "--data", help="folder to validate (default: data/raw of the pipeline)"),
):
    """Apply the data contracts. Clean rows go on, rejected rows go to quarantine with the reason."""
    from sail_core import pipeline

    cfg, wd = _run(_cfg), _wd()
    if data is not None and data.resolve() != wd.raw:
        # A stand-alone folder: write its outputs beside it, not into the pipeline's data/.
        base = data.resolve()
        wd = _SideWorkdir(base)
    _print(_run(pipeline.validate, cfg, _ws(wd), data))


class _SideWorkdir:
    """Work folders for validating a folder outside the pipeline: <D>.validated, <D>.quarantine."""

    def __init__(self, base: Path):
        self.root = base.parent
        self.raw = base
        self.validated = base.with_name(base.name + ".validated")
        self.quarantine = base.with_name(base.name + ".quarantine")


@app.command()
def version():
    """Commit data/raw and data/validated to DVC and push them to the remote."""
    from sail_core import pipeline

    _print(_run(pipeline.version, _run(_cfg), _ws()))


@app.command()
def train(
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint instead of starting over"),
    stage: Optional[str] = typer.Option(None, "--stage", help="train only this stage of train.stages, from the previous stage's model (what each DVC train@NAME stage runs)"),
):
    """Run the configured training stages in order, or one of them (logged to MLflow).

    Under `torchrun --nproc_per_node N sail train` the N processes train together (gloo on the CPU, NCCL on
    CUDA; stage.batch_size rows per process): rank 0 logs, writes and prints."""
    from sail_core import pipeline
    from sail_core.train.distributed import init_from_env, shutdown

    cfg = _run(_cfg)
    rank, _ = _run(init_from_env, cfg.train.device)
    try:
        if stage is None:
            result = _run(pipeline.train, cfg, _ws(), resume=resume)
        else:
            result = _run(pipeline.train_stage, cfg, _ws(), stage, resume=resume)
    finally:
        shutdown()
    if rank == 0:
        _print(result)


@app.command()
def mine(stage: str = typer.Option(..., "--stage", help="the stage (with hard_negatives) to mine for, with the model it "
                                                      "starts from (what each DVC mine@NAME stage runs)")):
    """Mine hard negatives for a training stage: F1-optimal threshold per dataset, into data/mined/STAGE."""
    from sail_core import pipeline

    _print(_run(pipeline.mine, _run(_cfg), _ws(), stage))


@app.command()
def teacher():
    """Fit the collaborative teacher (implicit ALS/BPR) on train items' events before the cutoff into data/teacher."""
    from sail_core import pipeline

    _print(_run(pipeline.teacher, _run(_cfg), _ws()))


@app.command()
def sid():
    """Fit the semantic IDs (residual k-means, index.sid_sizes) of the catalogue index into models/sid."""
    from sail_core import pipeline

    _print(_run(pipeline.sid, _run(_cfg), _ws()))


@app.command()
def index():
    """Embed the whole catalogue with the trained model and build its FAISS index (models/index)."""
    from sail_core import pipeline

    _print(_run(pipeline.index, _run(_cfg), _ws()))


@app.command()
def evaluate():
    """Recall@K of the trained model, the untrained model and the plain text reference; report and plot."""
    from sail_core import pipeline

    _print(_run(pipeline.evaluate, _run(_cfg), _ws()))


@app.command()
def gate():
    """Compare the candidate with the champion re-scored on the same queries (or the first reference);
    exit 1 when a threshold is missed.

    The thresholds are gate.metrics, e.g. --set gate.metrics.0.min_delta=0.02, or
    --set 'gate.metrics=[{metric: eval.i2i.recall_at_10, min_delta: 0.02}]'.
    """
    from sail_core import pipeline

    _print(_run(pipeline.gate, _run(_cfg), _ws()))


@app.command()
def export():
    """Export the trained model to ONNX, with a parity check against PyTorch."""
    from sail_core import pipeline

    _print(_run(pipeline.export, _run(_cfg), _ws()))


@app.command()
def register():
    """Version the model outputs (DVC) and register an MLflow model version aliased `challenger`."""
    from sail_core import pipeline

    _print(_run(pipeline.register, _run(_cfg), _ws()))


@app.command()
def promote(
    model_version: Optional[int] = typer.Option(None, "--version", help="registered version to serve (default: the challenger)"),
    rollback: bool = typer.Option(False, "--rollback", help="return to the previously served champion"),
):
    """Serve a model version on Triton and alias it `champion` (or roll back)."""
    from sail_core import pipeline

    cfg = _run(_cfg)
    if rollback:
        _print(_run(pipeline.rollback, cfg))
    else:
        _print(_run(pipeline.promote, cfg, model_version))


# ---------------------------------------------------------------- serving
@serve_app.command("up")
def serve_up():
    """Start tritonserver on 127.0.0.1 (explicit model control), loading the champion if one is served."""
    from sail_core.paths import home
    from serving import server

    from dataclasses import asdict

    cfg = _run(_cfg)
    running = server.status()
    if running.get("running"):
        err.print(f"tritonserver is already running (pid {running['pid']}, HTTP {running['http']}, gRPC "
                  f"{running['grpc']}); nothing started. `sail serve status` shows what it serves, "
                  "`sail serve down` stops it.")
    _print(asdict(_run(server.start, home().triton_repo, cfg.serve)))


@serve_app.command("down")
def serve_down():
    """Stop the local tritonserver."""
    from serving import server

    _print(_run(server.stop))


@serve_app.command("status")
def serve_status():
    """Report whether tritonserver is up, and which model versions it serves."""
    from serving import server

    _print(_run(server.status))


@app.command()
def embed(
    text: Optional[str] = typer.Argument(None, help="text to embed (optional when --image/--audio is given)"),
    image: Optional[Path] = typer.Option(None, "--image", help="cover image file (JPEG or PNG)"),
    audio: Optional[Path] = typer.Option(None, "--audio", help="audio file (WAV)"),
    frame: list[Path] = typer.Option([], "--frame", help="keyframe image file, in time order (repeatable)"),
    dim: Optional[int] = typer.Option(None, "--dim", help="Matryoshka dimension (default: full)"),
    protocol: str = typer.Option("http", "--protocol", help="http or grpc"),
    sid: bool = typer.Option(False, "--sid", help="also print the semantic ID Triton computes (one code per level)"),
):
    """Print the embedding Triton returns for any mix of TEXT, --image, --frame and --audio (and its semantic ID)."""
    from serving import client

    cfg = _run(_cfg)
    got = _run(client.embed_files, text, image, audio, dim, cfg.serve, protocol, frame or None, sid=sid)
    vec, codes = got if sid else (got, None)
    out = {"dim": len(vec), "norm": round(float((vec**2).sum() ** 0.5), 6)}
    if codes is not None:
        out["sid"] = [int(c) for c in codes]
    typer.echo(json.dumps({**out, "embedding": [round(float(x), 6) for x in vec]}))


def _answer(answer) -> dict:
    """A catalogue answer without the index's meta: which version answered, what was asked, the hits."""
    shown = {k: v for k, v in answer.to_dict().items() if k != "meta" and v is not None}
    return {**shown, "hits": [{k: v for k, v in h.items() if v is not None} for h in shown["hits"]]}


@app.command()
def similar(
    item_id: str = typer.Argument(..., help="a catalogue item id"),
    k: int = typer.Option(10, "-k", help="how many items"),
):
    """The items nearest ITEM_ID, from the catalogue index of the model Triton serves."""
    from serving import catalogue

    _print(_answer(_run(catalogue.similar, item_id, k, _run(_cfg).serve)))


@app.command()
def search(
    text: str = typer.Argument(..., help="a free-text query"),
    k: int = typer.Option(10, "-k", help="how many items"),
):
    """The items nearest TEXT: encoded by the served model on Triton, searched in that model's catalogue index."""
    from serving import catalogue

    _print(_answer(_run(catalogue.search, text, k, _run(_cfg).serve)))


# ------------------------------------------------------------ orchestration
def _run_conf(conf: str) -> dict:
    """The DAG run conf, checked before Airflow starts: JSON, a known profile that can run its steps."""
    from sail_core import pipeline
    from sail_core.config import check_steps, load_config

    try:
        parsed = json.loads(conf)
    except ValueError as e:
        raise typer.BadParameter(f"--conf is not JSON ({e}); e.g. --conf '{{\"profile\": \"demo\"}}'")
    if not isinstance(parsed, dict):
        raise typer.BadParameter(f"--conf must be a JSON object, got {conf!r}")
    cfg = _run(load_config, State.params, parsed.get("profile") or State.profile, State.overrides)
    _run(check_steps, cfg, parsed.get("steps") or pipeline.STEPS)
    return parsed


def _dag_run(conf: dict, kind: str = "cli") -> tuple[int, str]:
    """Run the DAG once through Airflow under a fresh run id; returns (exit code, run id). The whole
    `airflow dags test` wall time (Airflow's start-up included) is logged to the run as ``time.dag_s``."""
    import time

    from sail_core.pipeline import airflow_env
    from sail_core.pipeline.workspace import new_run_id

    run_id = new_run_id(kind)
    if State.dry_run:
        out.print(f"dry run: would run DAG {airflow_env.DAG_ID} as run {run_id} with conf {json.dumps(conf)}")
        raise typer.Exit(0)
    err.print(f"run [bold]{run_id}[/]")
    t0 = time.perf_counter()
    code = _run(airflow_env.dags_test, {**conf, "sail_run_id": run_id})
    _DAG_SECONDS[run_id] = time.perf_counter() - t0
    return code, run_id


_DAG_SECONDS: dict[str, float] = {}


def _after_run(code: int, run_id: str) -> None:
    from sail_core.pipeline import runs

    try:
        run = runs.get(_run(_cfg), run_id)
    except Exception:  # noqa: BLE001 - the run may have failed before it was recorded
        run = None
    if run is not None:
        from sail_core.pipeline import tracking

        if run_id in _DAG_SECONDS:
            tracking.log_metrics(run.mlflow_run_id, {"time.dag_s": _DAG_SECONDS[run_id]})
        err.print(f"run {run_id}: {run.status}; MLflow run {run.mlflow_run_id}; workspace {run.workspace}")
    if code != 0:
        err.print(f"[red]the DAG run failed[/] (exit {code}); the task logs above say where. Earlier outputs are "
                  f"kept; `sail runs show {run_id}` shows which task failed.")
        raise typer.Exit(code)


@app.command()
def run(
    conf: str = typer.Option("{}", "--conf", help="JSON run conf for the DAG (profile, steps, gate_thresholds, promote, base_run)"),
):
    """Run the whole pipeline DAG through Airflow (`airflow dags test`, SQLite), in a workspace of its own."""
    code, run_id = _dag_run(_run_conf(conf))
    _after_run(code, run_id)


@app.command()
def reproduce(
    run_id: str = typer.Argument(..., help="the run to reproduce: its run id or MLflow run id (`sail runs list`)"),
    tolerance: float = typer.Option(1e-6, "--tolerance", help="largest allowed difference of any evaluation metric"),
):
    """Re-run a recorded run from its record (resolved configuration, the steps it ran, the outputs it reused)
    into a new workspace, without promoting; then compare its data hash and metrics with the original's."""
    from sail_core.pipeline import reproduce as repro
    from sail_core.pipeline import runs

    cfg = _run(_cfg)
    original = _run(runs.get, cfg, run_id)
    code, new_id = _dag_run(repro.conf_for(original), "reproduce")
    _after_run(code, new_id)
    report = _run(repro.compare, original, _run(runs.get, cfg, new_id), tolerance)
    out.print(report.table())
    if not report.same:
        err.print(f"[red]not reproduced[/]: {report.why()}")
        raise typer.Exit(1)
    out.print(f"[green]reproduced[/]: run {new_id} matches {original.run_id} "
              f"({len(report.metrics)} metrics within {tolerance:g}; data hash {report.data_hash_new})")


@runs_app.command("list")
def runs_list(limit: int = typer.Option(20, "--limit", help="newest N runs")):
    """The pipeline runs, newest first: id, start, profile, status, tasks done, model version, workspace."""
    from rich.table import Table

    from sail_core.pipeline import runs

    table = Table("run id", "started (UTC)", "profile", "status", "tasks", "model", "workspace")
    for column in table.columns:
        column.no_wrap = True
    for r in _run(runs.list_runs, _run(_cfg))[:limit]:
        done = sum(r.task_state(t) == "done" for t in r.tasks)
        table.add_row(r.run_id, r.started.strftime("%Y-%m-%d %H:%M:%S"), r.tags.get("sail.profile", ""),
                      r.status + (f" ({r.tags['sail.failed_task']})" if r.status == "failed" else ""),
                      f"{done}/{len(r.tasks)}", r.tags.get("sail.model_version", ""), r.workspace)
    Console(width=max(out.width, 200)).print(table)  # whole ids and paths, also when piped


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(..., help="run id, MLflow run id, or `last`")):
    """One run's record: tags, output hashes, and each task's state and wall time."""
    from rich.table import Table

    from sail_core.pipeline import runs

    r = _run(runs.get, _run(_cfg), run_id)
    out.print(f"run {r.run_id}  (MLflow {r.mlflow_run_id})  status {r.status}  profile {r.tags.get('sail.profile')}\n"
              f"workspace {r.workspace}\ngit {r.tags.get('sail.git_sha')} (dirty: {r.tags.get('sail.git_dirty')})  "
              f"data {r.tags.get('sail.data_hash', '-')}  model version {r.tags.get('sail.model_version', '-')}")
    times = Table("task", "state", "wall time (s)")
    seconds = r.task_seconds
    for t in r.tasks:
        times.add_row(t, r.task_state(t), f"{seconds[t]:.1f}" if t in seconds else "")
    times.add_row("sum of tasks", "", f"{sum(seconds.values()):.1f}")
    if "time.dag_s" in r.metrics:
        times.add_row("whole DAG run", "", f"{r.metrics['time.dag_s']:.1f}")
        times.add_row("  Airflow and start-up", "", f"{r.metrics['time.dag_s'] - sum(seconds.values()):.1f}")
    out.print(times)
    outs = Table("output", "DVC hash")
    for path, md5 in sorted(r.outputs.items()):
        outs.add_row(path, md5)
    out.print(outs)


@runs_app.command("checkout")
def runs_checkout(
    run_id: str = typer.Argument(..., help="run id, MLflow run id, or `last`"),
    to: Path = typer.Option(..., "--to", help="folder to fetch the run's data/, models/ and reports/ into"),
):
    """Fetch a run's output folders from the object store (by the hashes it recorded) into a folder."""
    from sail_core.pipeline import runs

    cfg = _run(_cfg)
    _print(_run(runs.checkout, cfg, _run(runs.get, cfg, run_id), to))


@app.command()
def gc(
    apply: bool = typer.Option(False, "--apply", help="remove what the plan lists (default: only show it, a dry run)"),
    keep: Optional[int] = typer.Option(None, "--keep", help="keep the last N runs (default: store.keep_runs)"),
):
    """Free workspaces, checkpoints, stored objects and Triton versions that no kept run needs.

    Kept: the last N runs, every run a registered model version came from, runs still running; and the
    Triton versions of the champion, the previous champion, the one serving and the rollback target."""
    from sail_core.pipeline import retention

    cfg = _run(_cfg)
    plan = _run(retention.plan, cfg, _wd().root, keep)
    _print(plan.summary())
    if not apply:
        out.print("dry run: nothing removed; `sail gc --apply` removes the above")
        return
    _print(_run(retention.apply, cfg, plan))


@app.command()
def demo(
    profile: str = typer.Option("demo", "--profile", help="profile to run the DAG with"),
    query: str = typer.Option("a romantic comedy set in paris", "--query", help="text to embed through Triton at the end"),
):
    """The main job: run the whole DAG through Airflow on the embedded default, then query Triton and the served
    catalogue index."""
    from sail_core.paths import home
    from serving import catalogue, client

    code, run_id = _dag_run(_run_conf(json.dumps({"profile": profile})))
    _after_run(code, run_id)
    cfg = _run(_cfg)
    vectors, codes = _run(client.embed, [query], None, cfg.serve, "http", sid=True)
    vec = vectors[0]
    h = home()
    out.print(f"\n[bold green]Triton served[/] {query!r} -> {len(vec)}-d vector, first values {[round(float(x), 4) for x in vec[:6]]}, "
              f"semantic ID {'-'.join(str(int(c)) for c in codes[0])}")
    found = _run(catalogue.search, query, 5, cfg.serve)
    out.print(f"[bold green]sail search[/] {query!r} (v{found.version}'s encoder and catalogue index): items "
              + ", ".join(f"{h.item_id} ({h.score:.3f})" for h in found.hits))
    out.print(
        f"Triton:  http://{cfg.serve.host}:{cfg.serve.http_port} (left running; `.venv/bin/sail serve down` stops it)\n"
        f"MLflow:  store {h.mlflow_db}; browse with `.venv/bin/sail ui` (Airflow + MLflow on 127.0.0.1)\n"
        f"Run:     `.venv/bin/sail runs show {run_id}` (record, per-task wall times); its eval report is the "
        "MLflow artifact eval/eval_report.md"
    )


@app.command()
def ablate(
    name: str = typer.Option("demo", "--name", help="the ablation's name (MLflow tag sail.ablation); a rerun resumes it"),
    seeds: str = typer.Option("0,1", "--seeds", help="seeds of rows 1 and 8 (the other rows run the first)"),
    rows: str = typer.Option("", "--rows", help="run only these rows, e.g. 1,8 (default: all eight)"),
):
    """The report's ablation path on the profile's data: eight cumulative rows as real pipeline runs, compared in
    one table with paired intervals (reports/ablation/ablation.md, .json, .png; logged to MLflow)."""
    from sail_core.pipeline.ablation import ablate as run_ablation

    picked = [int(r) for r in rows.split(",") if r.strip()] or None
    _print(_run(run_ablation, State.profile, name, tuple(int(s) for s in seeds.split(",")), picked,
                overrides=State.overrides or None))


@app.command("cre-table")
def cre_table(
    name: str = typer.Option("demo", "--name", help="the table's name (MLflow tag sail.cre_table); a rerun resumes it"),
):
    """CRE's effect (the report's Tables 4 and 5): content-only, + seq2item, + seq2item + ID2item as real pipeline
    runs, with the teacher, plain MiniLM and the ridge stand-in on the same queries (reports/cre/)."""
    from sail_core.pipeline.cre_table import cre_table as run_table

    _print(_run(run_table, State.profile, name, overrides=State.overrides or None))


@app.command()
def ui():
    """Start Airflow (scheduler, triggerer, dag-processor, API server) and `mlflow ui` on 127.0.0.1 and print their
    addresses and login."""
    from sail_core.pipeline import airflow_env

    _run(airflow_env.start_uis)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
