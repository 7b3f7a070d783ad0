"""The `llmforge` command line: run the pipeline, one stage, the demo; inspect runs.

Prefect is imported only inside commands, after the environment points it at the right
server (flows/server.py), so `llmforge --help` is fast and settings apply.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.errors import DataError, EmptyStageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn web pages into a trained, evaluated GPT: the pipeline, one stage, the demo, runs.",
)
runs_app = typer.Typer(no_args_is_help=True, help="Inspect recorded runs.")
server_app = typer.Typer(no_args_is_help=True, help="The local Prefect server (UI).")
app.add_typer(runs_app, name="runs")
app.add_typer(server_app, name="server")
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override: key=value (repeatable).")
]
RootOpt = Annotated[
    str | None,
    typer.Option(
        "--storage", help="Storage root: a path or fsspec URL (default: run.storage_root)."
    ),
]
NoServerOpt = Annotated[
    bool,
    typer.Option("--no-server", help="Use Prefect's temporary server instead of a local one."),
]
VerifyOpt = Annotated[
    str | None,
    typer.Option(
        "--verify",
        help="How reused versions are checked: sha256 (default) or size (run.verify; "
        "env LLMFORGE_VERIFY).",
    ),
]


def _verify_sets(verify: str | None) -> list[str]:
    """`--set run.verify=...` from --verify, or from LLMFORGE_VERIFY when verify is None.

    Precedence: LLMFORGE_VERIFY < --set run.verify=... < --verify.
    """
    value = os.environ.get("LLMFORGE_VERIFY") if verify is None else verify
    return [f'run.verify="{value}"'] if value else []


def _check_run_id(run_id: str) -> str:
    """Before anything builds a path from it: one error line naming a bad run id."""
    from pipeline.store.versions import check_run_id

    return check_run_id(run_id)


def _config(config: Path | None, overrides: list[str] | None, storage: Path | None = None):
    from pipeline.config import load_config

    sets = _verify_sets(None) + list(overrides or [])
    if storage is not None:
        sets.append(f'run.storage_root="{storage}"')
    return load_config(config, sets)


def _run_id(store, ref: str) -> str:
    """The full id of the run `ref` names (an id, a unique prefix of one, or `latest`),
    before anything builds a path from it."""
    from pipeline.store.runs import resolve_run_id

    return resolve_run_id(store, _check_run_id(ref))


def _storage(storage: str | Path | None, config: Path | None = None):
    """The storage a command means: `--storage`, else the config's run.storage_root."""
    from pipeline.store.versions import Storage

    return Storage.at(storage or _config(config, None).run.storage_root)


def _prefect(storage, no_server: bool) -> dict:
    """Point Prefect at a real server (reused or started) unless told not to."""
    from flows.server import configure_environment, ensure_server

    if no_server:
        configure_environment(storage)
        from flows.server import tie_temporary_server

        tie_temporary_server()
        return {}
    with console.status("starting the local Prefect server (first start takes ~15 s)..."):
        server = ensure_server(storage)
    from flows.deploy import ensure_concurrency_limit
    from pipeline.config import RunSettings

    ensure_concurrency_limit(RunSettings().train_concurrency_limit)
    return server


def print_summary(record: dict[str, Any]) -> None:
    """Docs in/out per stage, drop reasons, tokens and model results of one run."""
    from pipeline.stages import is_model
    from pipeline.store.compare import harness_lines
    from pipeline.tokenize.tokenizer import describe_compression

    table = Table(title=f"run {record['run_id']} ({record['status']})")
    for column in ("stage", "version", "reused", "docs in", "docs out", "results"):
        table.add_column(column, overflow="fold")
    drops = Table(title="dropped documents by reason")
    for column in ("stage", "reason", "docs"):
        drops.add_column(column)
    for stage, version in record.get("versions", {}).items():
        counts = version.get("counts", {})
        extra = counts.get("extra", {})
        notes = []
        if "tokens_train" in extra:
            notes.append(f"tokens: {extra['tokens_train']:,} train, {extra['tokens_val']:,} val")
            if (line := describe_compression(extra)) is not None:
                notes.append(line)
        if "first_loss" in extra and "last_loss" in extra:
            notes.append(f"train loss: {extra['first_loss']:.3f} → {extra['last_loss']:.3f}")
        for key, label in RESULT_KEYS.items():
            if isinstance(extra.get(key), int | float):
                notes.append(f"{label}: {extra[key]:.4g}")
        if extra.get("plan_summary"):
            notes.append(f"plan: {extra['plan_summary']}")
        if extra.get("sizing_reason"):
            notes.append(f"auto: {extra['sizing_reason']}")
        if isinstance(extra.get("hellaswag"), dict):
            hs = extra["hellaswag"]
            line = f"hellaswag ({hs['n']}): acc {hs['acc']:.3f}, acc_norm {hs['acc_norm']:.3f}"
            if isinstance(hs.get("acc_char"), float):  # per character, as lm_eval's acc_norm
                line += f", acc_char {hs['acc_char']:.3f}"
            notes.append(line)
        notes += harness_lines(extra)  # lm-evaluation-harness, beside our scorer's line
        if isinstance(extra.get("contamination"), dict):
            sets = extra["contamination"]
            found = [
                f"{name} {value['contaminated']}/{value['items'] - value['too_short']}"
                for name, value in sets.items()
                if isinstance(value, dict)
            ]
            notes.append(f"{sets.get('ngram', 13)}-gram contaminated: " + ", ".join(found))
        model_stage = is_model(stage)
        table.add_row(
            stage,
            version["version_id"],
            "yes" if version.get("reused") else "no",
            "" if model_stage else f"{counts.get('docs_in', 0):,}",
            "" if model_stage else f"{counts.get('docs_out', 0):,}",
            "\n".join(notes),
        )
        for reason, count in sorted(counts.get("drops", {}).items(), key=lambda kv: -kv[1]):
            drops.add_row(stage, reason, f"{count:,}")
    console.print(table)
    if drops.row_count:
        console.print(drops)
    evaluation = record.get("versions", {}).get("evaluate", {}).get("counts", {}).get("extra", {})
    for sample in evaluation.get("samples", [])[:1]:
        console.print(f"sample: {sample['prompt']!r} → {sample['completion']!r}", soft_wrap=True)
    prefect = record.get("prefect") or {}
    if prefect.get("flow_run_url"):
        console.print(f"Prefect UI: {prefect['flow_run_url']}", soft_wrap=True)
    for name, path in (record.get("artifacts") or {}).items():
        console.print(f"{name}: {path}", soft_wrap=True)


RESULT_KEYS = {  # bits per byte first: it compares across tokenizers, val loss does not
    "final_val_bpb": "val bpb",
    "bits_per_byte": "bits per byte",
    "steps": "steps",
    "final_val_loss": "val loss",
    "tokens_per_s": "tokens/s",
    "val_loss": "val loss",
    "perplexity": "perplexity",
}


def _run_pipeline(cfg, no_server: bool, force: bool = False) -> dict[str, Any]:
    from pipeline.stages import preflight, stages_to_run

    preflight(cfg, stages_to_run(cfg))  # bad seeds, paths, tokenizer: fail before any work
    storage = _storage(cfg.run.storage_root)
    server = _prefect(storage, no_server)
    from flows.logs import quiet_known_tracebacks
    from flows.pipeline_flow import pipeline_flow
    from pipeline.store.runs import new_run_id

    quiet_known_tracebacks()

    run_id = new_run_id()
    _CURRENT_RUN["id"] = run_id  # for the one line Ctrl-C prints (main)
    console.print(f"run id: [bold]{run_id}[/bold]")
    try:
        record = pipeline_flow(cfg, run_id, force=force)
    finally:
        if server.get("ui_url"):
            console.print(f"Prefect UI: {server['ui_url']} (stop it with `llmforge server stop`)")
    return record


@app.command()
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    no_server: NoServerOpt = False,
    force: Annotated[
        bool,
        typer.Option(help="Recompute every stage, even versions that exist (a fresh crawl too)."),
    ] = False,
    verify: VerifyOpt = None,
) -> None:
    """Run the pipeline: crawl (or read WARCs) through tokenize, train and evaluate."""
    cfg = _config(config, [*(set_ or []), *(_verify_sets(verify) if verify else [])])
    print_summary(_run_pipeline(cfg, no_server, force))


@app.command(name="stages")
def list_stages() -> None:
    """The stages in pipeline order: what each reads and whether it runs on --input."""
    from pipeline import stages

    table = Table(title="stages")
    for column in ("stage", "reads", "kind", "--input"):
        table.add_column(column)
    for spec in stages.STAGES:
        standalone = spec.standalone is not None or spec.command is not None
        reads = stages.upstream(spec.name) or "seeds"
        table.add_row(spec.name, reads, spec.kind, "yes" if standalone else "no (--run)")
    console.print(table)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="The stage (`llmforge stages` lists them).")],
    input: Annotated[
        Path | None,
        typer.Option(help="WARC file/folder, documents folder, or Parquet/JSONL file/folder."),
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Output folder (must not exist).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Rerun this stage of a run.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    force: Annotated[
        bool,
        typer.Option(help="Recompute even if the version exists; train/evaluate: replace OUTPUT."),
    ] = False,
    tokens: Annotated[Path | None, typer.Option(help="evaluate: the token dataset folder.")] = None,
    resume: Annotated[
        bool, typer.Option(help="train: continue from OUTPUT/checkpoint.pt.")
    ] = False,
    no_server: NoServerOpt = False,
    verify: VerifyOpt = None,
) -> None:
    """Run one stage on a given input, or rerun one stage of a recorded run."""
    from pipeline import stages

    spec = stages.by_name(name)
    if run:
        _check_run_id(run)
        stage_sets = _stage_keys(name, set_)  # short keys mean what they mean with --input
        sets = [*_verify_sets(None), *stage_sets, *(_verify_sets(verify) if verify else [])]
        _rerun_stage(name, run, config, sets, force, no_server)
        return
    if input is None or output is None:
        raise DataError("stage: give --input and --output, or --run RUN_ID")
    if resume and "resume" not in spec.options:
        takers = [s.name for s in stages.STAGES if "resume" in s.options]
        raise DataError(f"stage: --resume applies to {', '.join(takers)} only")
    cfg = _config(config, _stage_keys(name, set_))
    from pipeline.stage import process_map

    with _output_locked(output):
        if spec.command is not None:
            stages.check_input(name, input, tokens)  # a wrong token input: one line, first
            options = {"tokens": tokens, "resume": resume, "force": force}
            with _progress_lines(name):
                manifest = spec.command(cfg, input, output, options)
        else:
            manifest = stages.run_standalone(
                name,
                cfg.stage_config(name),
                input,
                output,
                process_map(cfg.run.workers),
                reading=cfg.source,  # how to read Parquet/JSONL from other tools (source.*)
            )
    counts = manifest["counts"]
    if spec.describe is not None:
        summary = spec.describe(counts["extra"])
    else:
        summary = f"{counts['docs_in']} in, {counts['docs_out']} out, drops {counts['drops']}"
    console.print(f"{name}: {summary} → {output}", soft_wrap=True)


@contextmanager
def _progress_lines(stage: str) -> Iterator[None]:
    """A model stage's log lines (step, loss, tokens/s, ETA) on stderr while it runs, when
    stderr is a terminal or LLMFORGE_PROGRESS=1; quiet when piped, as usual."""
    import logging

    if not (sys.stderr.isatty() or os.environ.get("LLMFORGE_PROGRESS") == "1"):
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{stage}: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("model.train", "model.evaluate")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.removeHandler(handler)
            log.setLevel(level)


@contextmanager
def _output_locked(output: Path) -> Iterator[None]:
    """One command at a time per output folder: a second one fails at once naming the first
    (pid, host); work folders of commands that died writing this output are removed."""
    import shutil

    from pipeline.store.versions import output_lock, stale_standalone_roots

    output = output.expanduser().absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(output):
        for leftover in stale_standalone_roots(output):
            shutil.rmtree(leftover, ignore_errors=True)
            console.print(f"removed {leftover} (left by a stage command that died)")
        yield


def _stage_keys(stage: str, overrides: list[str] | None) -> list[str]:
    """For `stage NAME`, `--set key=v` may omit the stage's section: `min_doc_words` ..."""
    from pipeline.config import current_model

    sections = set(current_model().model_fields)
    return [
        s if s.split("=", 1)[0].split(".", 1)[0] in sections else f"{stage}.{s}"
        for s in overrides or []
    ]


def _rerun_stage(name, run_id, config, set_, force, no_server) -> None:
    from pipeline.config import config_from_dict
    from pipeline.store.runs import RunRecord

    storage = _storage(None, config)
    record = RunRecord.load(storage, run_id)  # an id, a unique prefix of one, or `latest`
    run_id = record.run_id
    cfg = config_from_dict(record.data["config"], set_)
    _prefect(storage, no_server)
    from flows.logs import quiet_known_tracebacks
    from flows.rerun import rerun_stage_flow

    quiet_known_tracebacks()

    summary = rerun_stage_flow(name, cfg, run_id, force)
    print_summary({"run_id": run_id, "status": f"rerun of {name}", "versions": {name: summary}})


DEMO_PORT = 8737


def _port_free(port: int) -> bool:
    """Whether the sample site can listen on `port`: probed with SO_REUSEADDR, as its server
    binds, so a port whose last connections are in TIME_WAIT (~60 s after a crawl) is free."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="Sample site seed.")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    no_server: NoServerOpt = False,
) -> None:
    """Generate the sample site, serve it on 127.0.0.1 and run the pipeline against it."""
    from pipeline.sample_site.server import serve_site
    from pipeline.sample_site.site import SampleSiteConfig, generate_site

    demo_config = config or Path(__file__).resolve().parents[1] / "configs" / "demo.toml"
    cfg = _config(demo_config if demo_config.exists() else None, set_)
    storage = _storage(cfg.run.storage_root)
    site_dir = storage.local / "sample-site" / f"seed-{seed}"  # served from this machine
    if not (site_dir / "ground_truth.json").exists():
        generate_site(site_dir, SampleSiteConfig(seed=seed))
    # A stable port keeps the seed URL, hence the crawl's version id, the same across demo
    # runs, so a rerun reuses the crawl; a busy port falls back to any free one.
    port = DEMO_PORT + seed if _port_free(DEMO_PORT + seed) else 0
    with serve_site(site_dir, port=port) as base_url:
        console.print(f"sample site: {base_url} (seed {seed}, files in {site_dir})", soft_wrap=True)
        cfg.crawl.seeds = [f"{base_url}/"]
        cfg.crawl.allow_private_addresses = True  # our own site on 127.0.0.1, whatever --config
        record = _run_pipeline(cfg, no_server)
    print_summary(record)


@app.command()
def serve(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Serve Prefect deployments from this machine: the pipeline (on `schedule.cron` if set)
    and one deployment per stage, to rerun a stage of a recorded run from the UI's form."""
    cfg = _config(config, set_)
    server = _prefect(_storage(cfg.run.storage_root), no_server=False)
    from flows.deploy import serve_deployments

    if server.get("ui_url"):
        console.print(f"Prefect UI: {server['ui_url']}/deployments", soft_wrap=True)
    serve_deployments(cfg)


@runs_app.command("list")
def runs_list(storage: RootOpt = None, config: ConfigOpt = None) -> None:
    """Recorded runs, newest first."""
    from pipeline.store.runs import list_runs

    store = _storage(storage, config)
    records = list_runs(store)
    table = Table(title=f"runs in {store.runs}")
    # Ids in full at any width, piped too: they are what every other command takes.
    longest = max((len(str(r.get("run_id", "?"))) for r in records), default=6)
    table.add_column("run id", no_wrap=True, min_width=longest)
    for column in ("status", "started", "stages", "git commit"):
        table.add_column(column)
    for record in records:
        table.add_row(
            record.get("run_id", "?"),
            record.get("status", "?"),
            str(record.get("started_at", "")),
            " ".join(record.get("versions", {})),
            str(record.get("git_commit") or "")[:12],
        )
    console.print(table)


def _current_ui_links(store, prefect: dict[str, Any]) -> dict[str, Any]:
    """The run's flow-run link on the server that answers for this root now: a server started
    again comes up on another port, with the same database, so the recorded link is stale."""
    from flows.server import running_server

    server = running_server(store) if prefect.get("flow_run_id") else None
    if server is None:
        return prefect
    return {**prefect, "flow_run_url": f"{server['ui_url']}/runs/flow-run/{prefect['flow_run_id']}"}


@runs_app.command("show")
def runs_show(run_id: str, storage: RootOpt = None, config: ConfigOpt = None) -> None:
    """One run: versions, counts, artifacts and its Prefect flow run URL."""
    from pipeline.store.runs import RunRecord

    store = _storage(storage, config)
    record = RunRecord.load(store, _check_run_id(run_id))  # a prefix or `latest` too
    from pipeline.store.runs import is_stale

    if is_stale(record.data):
        record.data["status"] = "interrupted"  # its process died; the next run records it
    record.data["prefect"] = _current_ui_links(store, record.data.get("prefect") or {})
    print_summary(record.data)
    reruns = record.data.get("reruns") or []
    if reruns:  # `stage NAME --run ID` and the stage deployments append here
        table = Table(title="single-stage reruns")
        for column in ("at", "stage", "version", "reused"):
            table.add_column(column, no_wrap=True)
        for rerun in reruns:
            reused = "yes" if rerun.get("reused") else "no"
            table.add_row(rerun.get("at", ""), rerun["stage"], rerun["version_id"], reused)
        console.print(table)
    console.print(f"run record: {record.url}")
    if record.data.get("error"):
        console.print(f"error: {record.data['error']}")


@runs_app.command("gc")
def runs_gc(
    keep_last: Annotated[
        int | None, typer.Option(help="Keep the newest N runs (default: all runs).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Say what would go; delete nothing.")] = False,
    storage: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Delete dataset versions and checkpoints no kept run references; say how much it freed."""
    from pipeline.store.gc import collect_garbage, format_report

    store = _storage(storage, config)
    console.print(format_report(collect_garbage(store, keep_last, dry_run)), soft_wrap=True)


@runs_app.command("report")
def runs_report(run_id: str, storage: RootOpt = None, config: ConfigOpt = None) -> None:
    """(Re)build a run's data report: funnel, drop reasons with samples, signal histograms."""
    from pipeline.report import build_report

    store = _storage(storage, config)
    paths = build_report(store, _run_id(store, run_id))
    console.print(f"report: {paths.html}\nmarkdown: {paths.markdown}", soft_wrap=True)


@runs_app.command("lineage")
def runs_lineage(run_id: str, storage: RootOpt = None, config: ConfigOpt = None) -> None:
    """The chain from the model back to the source WARC files and seed URLs, with configs."""
    from pipeline.store.lineage import format_lineage, lineage

    store = _storage(storage, config)
    console.print(
        format_lineage(lineage(store, _run_id(store, run_id))), soft_wrap=True, markup=False
    )


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@runs_app.command("compare")
def runs_compare(
    run_a: str,
    run_b: str,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw the loss curves into this PNG.")
    ] = None,
    allow_different_val: Annotated[
        bool, typer.Option(help="Show metrics even if the validation sets differ.")
    ] = False,
    storage: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Two runs side by side: config differences, dataset versions, metrics, loss curves.

    Metrics from different validation sets (eval.json's val_set_sha256) are refused: the
    reason is printed and the exit code is 1, unless --allow-different-val.
    """
    from pipeline.store.compare import compare_runs, plot_loss_curves

    store = _storage(storage, config)
    run_a, run_b = _run_id(store, run_a), _run_id(store, run_b)
    result = compare_runs(store, run_a, run_b)
    diffs = Table(title="config differences")
    for column in ("key", run_a, run_b):
        diffs.add_column(column, overflow="fold")
    for key, a, b in result.config_diffs:
        diffs.add_row(key, _cell(a), _cell(b))
    console.print(diffs if result.config_diffs else "configs: identical")
    datasets = Table(title="dataset versions")
    for column in ("stage", run_a, run_b, "same"):
        datasets.add_column(column)
    for stage, a, b in result.datasets:
        datasets.add_row(stage, _cell(a), _cell(b), "yes" if a == b else "no")
    console.print(datasets)
    if plot is not None:
        console.print(f"loss curves: {plot_loss_curves(result, plot)}", soft_wrap=True)
    if result.refusal and not allow_different_val:
        print(f"error: metrics not compared: {result.refusal}", file=sys.stderr)
        raise typer.Exit(1)
    if result.refusal:
        console.print(f"warning: {result.refusal}", soft_wrap=True)
    metrics = Table(title="metrics")
    for column in ("metric", run_a, run_b):
        metrics.add_column(column)
    for label, a, b in result.metrics:
        metrics.add_row(label, _cell(a), _cell(b))
    console.print(metrics)


@server_app.command("start")
def server_start(storage: RootOpt = None, config: ConfigOpt = None) -> None:
    """Start (or reuse) the local Prefect server and print the UI link."""
    from flows.server import ensure_server

    store = _storage(storage, config)
    os.environ.pop("PREFECT_API_URL", None)
    state = ensure_server(store)
    console.print(f"Prefect UI: {state['ui_url']}  (API {state['api_url']})")


@server_app.command("stop")
def server_stop(
    storage: RootOpt = None,
    config: ConfigOpt = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Stop every server this user started (all roots).")
    ] = False,
) -> None:
    """Stop the local Prefect server started for this storage root (or all of them)."""
    from flows.server import stop_all_servers, stop_server

    if all_:
        stopped = stop_all_servers()
        for entry in stopped:
            console.print(f"stopped: {entry['ui_url']} (root {entry['root']})", soft_wrap=True)
        console.print(f"stopped {len(stopped)} server(s)")
        return
    store = _storage(storage, config)
    console.print("stopped" if stop_server(store) else "no local server was running")


@server_app.command("status")
def server_status() -> None:
    """Every local Prefect server this user started (any storage root), and where."""
    from flows.server import list_servers

    servers = list_servers()
    if not servers:
        console.print("no local server is running")
    for entry in servers:
        state = "running" if entry["up"] else "not answering"
        console.print(
            f"{state}: {entry['ui_url']}  root {entry['root']}  pid {entry['pid']}  "
            f"since {entry['started']}",
            soft_wrap=True,
        )


SourceArg = Annotated[
    str, typer.Argument(help="Run id, train version / stage train folder, or checkpoint.pt.")
]


def _source_root(source: str, storage: str | None, config: Path | None) -> str | Path | None:
    """Where a SOURCE that is a run id is looked up: --storage, else the config's root (a
    path needs none)."""
    return storage or (None if Path(source).exists() else _config(config, None).run.storage_root)


def _checkpoint_for(source: str, storage: str | None, config: Path | None) -> Path:
    """The checkpoint.pt a SOURCE argument means (a path, or a run id under the storage)."""
    from model.export import checkpoint_for

    return checkpoint_for(source, _source_root(source, storage, config))


@app.command("export")
def export_model(
    source: SourceArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")],
    format: Annotated[
        str,
        typer.Option(
            "--format", "-f", help="safetensors (ours) or hf (transformers AutoModelForCausalLM)."
        ),
    ] = "safetensors",
    storage: RootOpt = None,
    config: ConfigOpt = None,
    license: Annotated[
        str | None,
        typer.Option(help="The model card's license (default 'other': the data's terms apply)."),
    ] = None,
) -> None:
    """Export a trained model: safetensors + config.json, or a Hugging Face layout (GPT-2;
    Qwen3/Llama/Apertus/Arcee for rotary models), with a model card README.md."""
    from model.card import card_context
    from model.export import checkpoint_for, export

    root = _source_root(source, storage, config)
    checkpoint = checkpoint_for(source, root)
    export(checkpoint, output, format, card_context(source, root, checkpoint), license)
    console.print(f"export ({format}): {checkpoint} → {output}", soft_wrap=True)


MaxNewOpt = Annotated[int, typer.Option(help="Most tokens to sample (per reply in chat).")]
TemperatureOpt = Annotated[float, typer.Option(help="Softmax temperature; 0: greedy (argmax).")]
TopKOpt = Annotated[int, typer.Option(help="Sample from the k most likely tokens; 0: all.")]
TopPOpt = Annotated[
    float, typer.Option(help="Nucleus: the most likely tokens up to this mass; 1: all.")
]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed (default: a fresh one, printed).")]
DeviceOpt = Annotated[str, typer.Option(help="auto (cuda, mps, else cpu), cpu, cuda or mps.")]
ThreadsOpt = Annotated[
    int | None, typer.Option(help="CPU threads (default: one per core; 1 on a busy machine).")
]


def _sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float):
    """The sampling settings, checked before a model loads (one error line each)."""
    from model.sampling import Sampling

    if max_new_tokens < 1:
        raise DataError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if top_k < 0:
        raise DataError(f"--top-k must be >= 0 (0: all tokens), got {top_k}")
    return Sampling(temperature, top_k or None, top_p)


def _write_streamed(pieces: Iterable[str]) -> None:
    """Text to stdout as it is sampled, then the line's end."""
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@app.command()
def generate(
    source: SourceArg,
    prompt: Annotated[
        str | None, typer.Option(help="Text to continue (default: read from stdin).")
    ] = None,
    max_new_tokens: MaxNewOpt = 256,
    temperature: TemperatureOpt = 0.8,  # nanoGPT sample.py's defaults (as evaluate.*)
    top_k: TopKOpt = 200,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    storage: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Continue a prompt with a trained model, streaming the text to stdout as it comes;
    stops at end-of-text or --max-new-tokens. A summary line (speed, seed) goes to stderr."""
    from model.sampling import TextStream, load_for_sampling, prompt_ids

    sampling = _sampling(max_new_tokens, temperature, top_k, top_p)
    model, encoding = load_for_sampling(_checkpoint_for(source, storage, config), device, threads)
    if prompt is None:
        if sys.stdin.isatty():
            print("reading the prompt from stdin; end it with Ctrl-D", file=sys.stderr)
        prompt = sys.stdin.read().removesuffix("\n")  # echo's newline is not the prompt's
    ids = prompt_ids(encoding, prompt)
    stream = TextStream(model, encoding, ids, max_new_tokens, sampling, seed)
    try:
        _write_streamed(stream)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise typer.Exit(130) from None
    except BrokenPipeError:  # `| head`: the reader left; no traceback when Python flushes
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    print(stream.summary(), file=sys.stderr)


@app.command()
def chat(
    source: SourceArg,
    max_new_tokens: MaxNewOpt = 128,
    temperature: TemperatureOpt = 0.8,
    top_k: TopKOpt = 200,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    storage: RootOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Talk to a trained model: a line in, a reply streamed out (model/chat.py); history is
    kept within the context window, oldest lines dropped first. Ctrl-D or Ctrl-C leaves."""
    from model.chat import Chat
    from model.sampling import load_for_sampling

    sampling = _sampling(max_new_tokens, temperature, top_k, top_p)
    checkpoint = _checkpoint_for(source, storage, config)
    try:
        model, encoding = load_for_sampling(checkpoint, device, threads)
        session = Chat(model, encoding, sampling, max_new_tokens, seed)
        print(
            f"chat with {checkpoint} ({model.cfg.context_length}-token window, seed "
            f"{session.seed}); Ctrl-D to leave",
            file=sys.stderr,
        )
        if sys.stdin.isatty():
            with suppress(ImportError):  # line editing and history for input(), not on Windows
                import readline  # noqa: F401
        while True:
            try:
                line = input("> ")
            except EOFError:
                break
            if not line.strip():
                continue
            _write_streamed(session.reply(line))
    except KeyboardInterrupt:
        pass
    sys.stdout.write("\n")


@app.command()
def doctor(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """What training will use on this machine (device, precision, threads, compile) and why,
    with measured matmul speeds."""
    from model.doctor import diagnose, format_diagnosis

    cfg = _config(config, set_)
    with console.status("measuring matmul speed..."):
        report = diagnose(cfg.train)
    console.print(format_diagnosis(report), soft_wrap=True, markup=False, highlight=False)


_CURRENT_RUN: dict[str, str] = {}  # the run this command started, if it started one


def main() -> None:
    """Entry point: bad input ends with one line naming the problem, not a traceback; Ctrl-C
    with one line saying how to resume, exit code 130 (128 + SIGINT, as shells do)."""
    from pipeline.lifeline import exit_on_signals

    exit_on_signals()  # SIGTERM/SIGHUP: stop workers and servers, run cleanups, then exit
    try:
        app()
    except (DataError, EmptyStageError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        run = f": run {_CURRENT_RUN['id']}" if "id" in _CURRENT_RUN else ""
        print(f"\ninterrupted{run}; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
