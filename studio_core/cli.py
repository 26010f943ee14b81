"""`peft-studio`: the same engine as the studio, headless, from a config file.

Exit codes: 0 success (the run dir's absolute path is the last stdout line), 2 bad input (message on
stderr), 1 a failure during a stage.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from studio_core.errors import InputError, StudioError

PRESET_CHOICES = ("quick_try", "balanced", "max_quality", "low_memory")  # studio_core.train.presets.PRESET_IDS

err = Console(stderr=True, highlight=False, soft_wrap=True)  # no inserted line breaks: errors stay greppable


def _error(message: object) -> None:
    err.print(f"[bold red]error[/]: {escape(str(message))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peft-studio", description="Parameter-efficient fine-tuning studio.")
    sub = parser.add_subparsers(dest="command", required=True)
    home_help = "Studio home (default: $PEFT_STUDIO_HOME, else ~/.peft-studio)."

    run = sub.add_parser("run", help="Run the enabled stages of a config.")
    run.add_argument("config", nargs="?", help="Run config JSON file (defaults apply where absent).")
    run.add_argument("--data", help="Shortcut for --set data.path=PATH.")
    run.add_argument("--model", help="Shortcut for --set model.ref=REF.")
    run.add_argument("--method", help="Shortcut for --set method.name=NAME.")
    run.add_argument("--preset", choices=PRESET_CHOICES,
                     help="Use-case preset: sets the method and every training setting, the rank and steps "
                     "recommended from the data (--set still overrides it).")
    run.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                     help="Override one field, e.g. --set training.max_steps=50 (values parse as JSON).")
    run.add_argument("--simulate", action="store_true",
                     help="Validate the real data and model, then run on a tiny model and a 64-row slice.")
    run.add_argument("--resume", metavar="RUN_ID", help="Continue an interrupted or cancelled run.")
    run.add_argument("--queue", action="store_true",
                     help="Add the run to the studio home's queue instead of running it now (the studio, or "
                     "`peft-studio queue work`, runs it).")
    run.add_argument("--job", metavar="RUN_ID", help=argparse.SUPPRESS)  # the supervisor's child: run a queued run
    run.add_argument("--nproc", type=int, metavar="N",
                     help="Training processes on this machine, through torchrun (training.nproc); with --resume, "
                     "the run continues on N processes.")
    run.add_argument("--nnodes", type=int, metavar="N", help="Machines training together (training.nnodes).")
    run.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                     help="torchrun's c10d rendezvous for several machines (training.rdzv_endpoint).")
    run.add_argument("--node-rank", type=int, default=0, metavar="R",
                     help="This machine's rank: 0 runs the whole run; R > 0 joins run --run-id's training (the "
                     "studio home on a shared file system) with --nproc processes.")
    run.add_argument("--run-id", metavar="ID", help="Name the new run (so that other machines can join it).")
    run.add_argument("--home", help=home_help)

    queue = sub.add_parser("queue", help="The studio home's queue: list it, cancel a run, or work through it.")
    queue_sub = queue.add_subparsers(dest="queue_command")
    queue_sub.add_parser("list", help="Queued and running runs (the default).")
    queue_cancel = queue_sub.add_parser("cancel", help="Cancel a queued run, or ask a running one to stop.")
    queue_cancel.add_argument("run_id")
    queue_sub.add_parser("work", help="Run the queued runs one by one, each in its own process, until none is left.")
    for p in (queue, *queue_sub.choices.values()):
        p.add_argument("--home", help=home_help)

    sub.add_parser("methods", help="List the PEFT methods: what each trains, mergeable, 4-bit base, layers.")
    runs = sub.add_parser("runs", help="List the runs in the studio home.")
    runs.add_argument("--home", help=home_help)
    schema = sub.add_parser("schema", help="Print the run config's JSON schema.")
    schema.add_argument("--home", help=home_help)
    hardware = sub.add_parser("hardware", help="Show the hardware profile.")
    hardware.add_argument("--json", action="store_true", help="Print JSON.")
    hardware.add_argument("--check-cuda", action="store_true",
                          help="Run a small matmul round trip on every GPU (exit 1 only if CUDA exists and fails).")
    hardware.add_argument("--home", help=home_help)
    keys = sub.add_parser("keys", help="Signing keys (Ed25519 + ML-DSA-65) in the studio home.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", help="Create a key pair (private files 0600).")
    generate.add_argument("--passphrase-env", metavar="VAR",
                          help="Encrypt the private keys with the passphrase in this environment variable.")
    keys_sub.add_parser("list", help="List the keys.")
    export = keys_sub.add_parser("export", help="Print (or write) the public keys as PEM.")
    export.add_argument("--key-id", help="Key id or unique prefix (default: the only key).")
    export.add_argument("--out", help="Write to this file instead of stdout.")
    for p in (keys, generate, keys_sub.choices["list"], export):
        p.add_argument("--home", help=home_help)

    verify = sub.add_parser("verify", help="Verify a package: every file digest and both signatures.")
    verify.add_argument("package", help="A package folder (or a run dir, meaning its artifacts/package).")
    verify.add_argument("--public-key", help="PEM file of the signer's public keys (default: the home's keys).")
    verify.add_argument("--home", help=home_help)

    promote = sub.add_parser("promote", help="Judge a package by a policy; record it in a channel if all pass.")
    promote.add_argument("package", help="A package folder (or a run dir, meaning its artifacts/package).")
    promote.add_argument("--policy", required=True, help="Policy JSON file.")
    promote.add_argument("--channel", default="stable", help="Registry channel (default: stable).")
    promote.add_argument("--public-key", help="PEM file of trusted public keys (default: the home's keys).")
    promote.add_argument("--home", help=home_help)

    _add_models_parser(sub, home_help)
    chat = sub.add_parser("chat", help="Chat with a run's tuned model and its base side by side (streamed).")
    chat.add_argument("run", help="Run id (see `peft-studio runs`) or run directory.")
    chat.add_argument("--source", choices=("adapter", "merged"), default="adapter",
                      help="The tuned side: the unmerged adapter on a fresh base (default) or the merged model.")
    chat.add_argument("--system", help="System prompt, sent first (through the training chat template).")
    chat.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                      help="Answer this message and exit instead of an interactive chat (repeatable: one turn each).")
    chat.add_argument("--side", choices=("both", "tuned", "base"), default="both", help="Which models answer.")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; above 0: sampling.")
    chat.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling (with --temperature > 0).")
    chat.add_argument("--top-k", type=int, default=0, help="Top-k sampling, 0: off (with --temperature > 0).")
    chat.add_argument("--max-new-tokens", type=int, default=128, help="Longest answer, in tokens.")
    chat.add_argument("--seed", type=int, default=0, help="Sampling seed.")
    chat.add_argument("--jsonl", action="store_true", help=argparse.SUPPRESS)  # the studio's worker protocol
    chat.add_argument("--home", help=home_help)

    studio = sub.add_parser("studio", help="Open the studio in the browser (this machine only, unless --share).")
    studio.add_argument("--port", type=int, default=8501, help="Port (default: 8501).")
    studio.add_argument("--share", action="store_true",
                        help="Listen on every interface and require the access token printed (kept in the home, 0600).")
    studio.add_argument("--data-root", dest="data_roots", action="append", default=[], metavar="DIR",
                        help="With --share: a folder whose files typed paths may name, beside the home (repeatable).")
    studio.add_argument("--new-token", action="store_true", help="With --share: replace the access token.")
    studio.add_argument("--home", help=home_help)
    return parser


def resolve_run_config(args: argparse.Namespace):
    """The RunConfig a `run` invocation means: file, then shortcut flags, then --set, then --simulate."""
    from studio_core.config import RECIPE_KEYS, switch_recipe, validate_config
    from studio_core.config_io import apply_overrides, load_config

    loaded: dict[str, Any] = load_config(args.config).model_dump() if args.config else {}
    shortcuts = {"data.path": args.data, "model.ref": args.model, "method.name": args.method,
                 "training.nproc": getattr(args, "nproc", None), "training.nnodes": getattr(args, "nnodes", None),
                 "training.rdzv_endpoint": getattr(args, "rdzv_endpoint", None)}
    assignments = [f"{k}={v}" for k, v in shortcuts.items() if v is not None] + args.assignments
    data = apply_overrides(copy.deepcopy(loaded), assignments)
    keys = [path.split(".") for path in RECIPE_KEYS]
    if loaded and any(data[s][k] != loaded[s][k] for s, k in keys):  # the file's recipe fields follow its data,
        for section, key in keys:  # model and privacy
            loaded = switch_recipe(loaded, f"{section}.{key}", data[section][key])
        data = apply_overrides(loaded, assignments)
    if getattr(args, "preset", None):  # from the data and model chosen above; explicit --set values still win
        from studio_core.train.presets import recommend_preset

        data, reasons = recommend_preset(validate_config(data), args.preset, args.home)
        err.print(f"[bold]preset {args.preset}[/]:\n" + "\n".join(f"  - {escape(r)}" for r in reasons))
        data = apply_overrides(data, args.assignments)
    if args.simulate:
        data["simulate"] = True
    return validate_config(data)


def cmd_run(args: argparse.Namespace) -> int:
    from studio_core import jobs, workflow

    if args.job:
        return _run_job(args)
    if args.run_id is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}", args.run_id):
        raise InputError(f"--run-id {args.run_id!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if args.node_rank:
        return _join(args)
    if args.resume:
        config = _resume_config(args)
    else:
        config = resolve_run_config(args)
    if args.queue:
        run = jobs.enqueue(config, args.home, resume=args.resume, requested_by="cli")
        err.print(f"queued {run.run_id} (place {len(jobs.queued_runs(args.home))}); the studio runs it, or "
                  "`peft-studio queue work`")
        print(run.path)
        return 0
    if config.simulate:
        err.print("[bold yellow]SIMULATION[/]: real data and model are validated; the pipeline then runs on a "
                  "tiny random model and a 64-row slice. Results say nothing about the real model.")
    for other in jobs.running_runs(args.home):
        err.print(f"[yellow]note[/]: run {other.run_id} is running on this machine too; the two share its "
                  "CPU, memory and GPU")
    try:
        run_dir = workflow.run(config, args.home, resume=args.resume, on_event=_print_event, run_id=args.run_id)
    except workflow.StageFailed as e:
        _error(e)
        err.print(f"run dir: {escape(str(e.run.path))}")
        return 2 if e.is_input_error else 1
    status = run_dir.read_status()
    err.print(f"[bold green]{status['state']}[/] {'(simulated) ' if config.simulate else ''}run {run_dir.run_id}")
    print(run_dir.path)
    return 0


def _run_job(args: argparse.Namespace) -> int:
    """The studio supervisor's child: run the queued run `--job`, with secrets from stdin, SIGTERM as cancel."""
    import os
    import signal

    from studio_core import workflow
    from studio_core.config import validate_config
    from studio_core.context import CANCEL_FILE
    from studio_core.errors import CancelledError
    from studio_core.runs import RunStore

    if args.config or args.assignments or args.data or args.model or args.method or args.simulate or args.resume:
        raise InputError("--job runs a queued run with its saved config; it takes no other run options")
    run = RunStore(args.home).get(args.job)
    secrets = sys.stdin.read() if not sys.stdin.isatty() else ""
    for name, value in (json.loads(secrets) if secrets.strip() else {}).items():
        os.environ[name] = value  # this process only: never written to the run dir

    def on_term(signum, frame):  # the supervisor's escalation of a cancel request, or a shutdown
        if (run.path / CANCEL_FILE).exists():
            raise CancelledError("cancelled: stopped by SIGTERM after the cancel request")
        raise SystemExit(f"terminated by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_term)
    status = run.read_status()
    config = validate_config(run.config_data())
    resume = args.job if status.get("queued", {}).get("resume") else None
    try:
        workflow.run(config, args.home, resume=resume, run_id=args.job, on_event=_print_event)
    except CancelledError as e:
        err.print(f"cancelled: {escape(str(e))}")
        return 0
    except workflow.StageFailed as e:
        _error(e)
        return 2 if e.is_input_error else 1
    err.print(f"[bold green]completed[/] run {args.job}")
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    from studio_core import jobs

    if args.queue_command == "cancel":
        state = jobs.cancel(args.run_id, args.home, requested_by="cli")
        print(f"{args.run_id}: {state}")
        return 0
    if args.queue_command == "work":
        count = jobs.Supervisor(args.home).drain()
        err.print(f"queue empty; ran {count} run(s)")
        return 0
    table = Table(title="queue")
    for column in ("place", "run", "state", "queued at", "by"):
        table.add_column(column)
    for run in jobs.running_runs(args.home):
        table.add_row("now", run.run_id, "running", "", "")
    for place, run in enumerate(jobs.queued_runs(args.home), start=1):
        queued = run.read_status().get("queued", {})
        table.add_row(str(place), run.run_id, "queued" + (" (resume)" if queued.get("resume") else ""),
                      str(queued.get("at", "")), str(queued.get("requested_by") or ""))
    _table_console().print(table)
    return 0


def _resume_config(args: argparse.Namespace):
    from studio_core.config import validate_config
    from studio_core.runs import RunStore, atomic_write_text, config_file_text

    if args.config or args.assignments or args.data or args.model or args.method or args.simulate or args.run_id:
        raise InputError("--resume continues a run with its saved config; drop the config file and overrides "
                         "(only --nproc may change: the number of training processes)")
    run = RunStore(args.home).get(args.resume)
    data = run.config_data()
    before = data.get("training", {}).get("nproc", 1)
    if args.nproc is not None and args.nproc != before:
        data.setdefault("training", {})["nproc"] = args.nproc
        config = validate_config(data)
        atomic_write_text(run.path / "config.json", config_file_text(config.model_dump_json()))
        run.event("processes_changed", f"resumed on {args.nproc} training process(es) instead of {before}: the "
                                       "global batch changes with them", before=before, after=args.nproc)
        return config
    return validate_config(data)


def _join(args: argparse.Namespace) -> int:
    """`--node-rank R > 0`: this machine's workers in run `--run-id`'s training (the home is shared)."""
    from studio_core.runs import studio_home
    from studio_core.train.distributed import join

    missing = [flag for flag, value in (("--run-id", args.run_id), ("--nnodes", args.nnodes),
                                        ("--rdzv-endpoint", args.rdzv_endpoint)) if not value]
    if missing:
        raise InputError(f"--node-rank {args.node_rank} joins another machine's run: give {', '.join(missing)} "
                         "as node 0 was given them")
    if args.node_rank >= args.nnodes:
        raise InputError(f"--node-rank {args.node_rank} must be below --nnodes {args.nnodes}")
    err.print(f"joining run {args.run_id}'s training as node {args.node_rank} of {args.nnodes} "
              f"(rendezvous {args.rdzv_endpoint})")
    code = join(studio_home(args.home), args.run_id, args.nproc or 1, args.nnodes, args.node_rank, args.rdzv_endpoint)
    return 0 if code == 0 else 1


QUIET_EVENTS = ("data_resolved", "privacy_plan", "privacy_budget_reached", "model_resolved", "preflight_go", "training_initialised", "resumed", "merged",
                "exported", "compiled", "packaged", "signed", "promoted",
                "evaluated", "simulation", "distributed_launch", "sparsified", "processes_changed")


def _print_event(event: dict[str, Any]) -> None:
    kind, message = event["type"], event.get("message", "")
    if kind == "progress":
        step, total = event["step"], event["max_steps"]
        if step == total or step % max(1, total // 20) == 0:
            eta = f", ETA {event['eta_s']:.0f} s" if event.get("eta_s") is not None else ""
            spent = f"  epsilon {event['epsilon']:.3f}" if event.get("epsilon") is not None else ""
            sent = (f"  sent {event['comm_bytes']:,} B/step ({event['comm_compression']}x less)"
                    if event.get("comm_bytes") else "")  # step 7's gradient compression, per process
            loss = "n/a (empty batch)" if event.get("loss") is None else f"{event['loss']:.4f}"
            err.print(f"    step {step}/{total}  loss {loss}{spent}{sent}  elapsed {event['elapsed_s']:.0f} s{eta}")
    elif kind == "stage_started":
        err.print(f"[bold]{event['number']:>2}. {message}[/] ...")
    elif kind == "stage_completed":
        err.print(f"    done in {event['seconds']:.1f} s")
    elif kind == "warning":
        err.print(f"    [yellow]warning[/]: {escape(message)}")
    elif kind in QUIET_EVENTS:
        err.print(f"    {escape(message)}")


def cmd_runs(args: argparse.Namespace) -> int:
    from studio_core.runs import RunStore, format_bytes

    store = RunStore(args.home)
    runs = store.list()
    table = Table(title=f"runs in {store.root}")
    table.add_column("run", no_wrap=True, min_width=max((len(r.run_id) for r in runs), default=3))
    for column in ("state", "simulated", "stages done", "started", "disk"):
        table.add_column(column)
    for run_dir in runs:
        status = run_dir.read_status()
        done = sum(1 for s in status.get("stages", {}).values() if s.get("state") == "completed")
        table.add_row(run_dir.run_id, status["state"], "yes" if status.get("simulated") else "",
                      str(done), str(status.get("started_at") or ""), format_bytes(run_dir.disk_bytes()))
    _table_console().print(table)
    return 0


def _table_console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=200)  # piped: whole run ids, not 80 columns


def cmd_schema(args: argparse.Namespace) -> int:
    from studio_core.config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:
    from studio_core.hardware import format_profile, hardware_profile
    from studio_core.runs import studio_home

    if args.check_cuda:
        return cmd_check_cuda(args)
    profile = hardware_profile(studio_home(args.home))
    if args.json:
        print(profile.model_dump_json(indent=2))
        return 0
    table = Table(title="hardware", show_header=False)
    for label, value in format_profile(profile):
        table.add_row(label, value)
    Console().print(table)
    return 0


def cmd_check_cuda(args: argparse.Namespace) -> int:
    """`hardware --check-cuda`: 0 when CUDA passed or there is simply none, 1 when it exists and fails."""
    from studio_core.hardware import cuda_check_rows, validate_cuda

    check = validate_cuda()
    if args.json:
        print(check.model_dump_json(indent=2))
        return 0 if check.ok else 1
    console = Console(highlight=False, soft_wrap=True)
    style = {"passed": "green", "failed": "bold red", "no_cuda": "yellow"}[check.status]
    console.print(f"[{style}]{escape(check.message)}[/]")
    if check.hint:
        console.print(f"fix: {escape(check.hint)}")
    rows = cuda_check_rows(check)
    if rows:
        table = Table(title="CUDA check")
        columns = [c for c in rows[0] if c != "detail"]  # details go below, unwrapped, so they stay greppable
        for column in columns:
            table.add_column(column, no_wrap=column == "result")
        for row in rows:
            table.add_row(*(escape(row[c]) for c in columns))
        console.print(table)
    for row in rows:
        if row["detail"]:
            console.print(escape(f"GPU {row['device']} {row['dtype']}: {row['detail']}".replace(" :", ":")))
    return 0 if check.ok else 1


def _quiet_libraries() -> None:
    """Library progress bars and notices would bury the studio's own progress lines."""
    import logging
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # a CPU kernel-download notice, harmless offline
    for module in ("transformers", "peft", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cmd_keys(args: argparse.Namespace) -> int:
    import os

    from studio_core.package import export_public_keys, generate_keys, list_keys

    if args.keys_command == "generate":
        passphrase = None
        if args.passphrase_env:
            passphrase = os.environ.get(args.passphrase_env)
            if not passphrase:
                raise InputError(f"--passphrase-env {args.passphrase_env}: that environment variable is empty")
        info = generate_keys(args.home, passphrase)
        err.print(f"created key {info.key_id} in {escape(str(info.path))}" + (" (encrypted)" if info.encrypted else ""))
        print(info.key_id)
    elif args.keys_command == "list":
        for info in list_keys(args.home):
            print(f"{info.key_id}  {info.created}  {'encrypted' if info.encrypted else 'plain'}")
    else:
        pem = export_public_keys(args.home, args.key_id, Path(args.out) if args.out else None)
        if not args.out:
            sys.stdout.write(pem.decode("ascii"))
    return 0


def _package_dir(path: str) -> Path:
    folder = Path(path)
    if (folder / "artifacts" / "package" / "manifest.json").is_file():
        return folder / "artifacts" / "package"
    if not (folder / "manifest.json").is_file():
        raise InputError(f"{folder}: no package here (no manifest.json); give a package folder or a run dir")
    return folder


def _trusted_keys(args: argparse.Namespace):
    from studio_core.package import load_public_keys
    from studio_core.runs import studio_home

    return load_public_keys(Path(args.public_key) if args.public_key else studio_home(args.home))


def cmd_verify(args: argparse.Namespace) -> int:
    from studio_core.package import verify_package

    report = verify_package(_package_dir(args.package), _trusted_keys(args))
    if report.ok:
        print(f"verified: {report.subject_digest} signed by {report.key_id} (Ed25519 + ML-DSA-65)")
        return 0
    for reason in report.reasons:
        err.print(f"[red]FAIL[/] {escape(reason)}")
    return 1


def cmd_promote(args: argparse.Namespace) -> int:
    from studio_core.package import promote

    result = promote(_package_dir(args.package), Path(args.policy), args.channel, args.home,
                     public_keys=_trusted_keys(args) if args.public_key else None)
    for rule in result.rules:
        mark = "[green]pass[/]" if rule.passed else "[red]FAIL[/]"
        err.print(f"{mark} {rule.name}: {escape(rule.detail)}")
    err.print(f"verification summary: {escape(str(result.summary_path))}")
    if not result.passed:
        _error(result.refusal())
        return 1
    print(f"promoted to {args.channel}: {result.registry_path}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from studio_core.train.adapters import method_table

    rows = method_table()
    table = Table(title="PEFT methods (--method ID)")
    for column in rows[0]:
        table.add_column(column)
    for row in rows:
        table.add_row(*(("yes" if v is True else "no" if v is False else str(v)) for v in row.values()))
    Console().print(table)
    return 0


def _add_models_parser(sub, home_help: str) -> None:
    models = sub.add_parser("models", help="The Hugging Face Hub as a model registry: search, show, pull, cached.")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    search = models_sub.add_parser("search", help="Search Hub models (most downloaded first).")
    search.add_argument("query", nargs="?", default="", help="Text in the model id (empty: the task's popular ones).")
    search.add_argument("--task", help="Pipeline tag, e.g. text-generation.")
    search.add_argument("--library", help="Library, e.g. transformers or peft.")
    search.add_argument("--sort", choices=["downloads", "likes"], default="downloads")
    search.add_argument("--limit", type=int, default=20)
    show = models_sub.add_parser("show", help="A model's details: size, licence, usable or why not, fit here.")
    show.add_argument("id", help="Hub model id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct.")
    show.add_argument("--method", default="lora", help="PEFT method the memory fit is estimated for.")
    pull = models_sub.add_parser("pull", help="Download safetensors, config and tokenizer into the model cache.")
    pull.add_argument("id")
    pull.add_argument("--revision")
    models_sub.add_parser("cached", help="Models in the studio's and the user's Hugging Face caches.")
    for p in (models, *models_sub.choices.values()):
        p.add_argument("--home", help=home_help)
        p.add_argument("--refresh", action="store_true", help="Ask the Hub even when the cached answer is fresh.")
        p.add_argument("--json", action="store_true", help="Print JSON.")


def cmd_models(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from studio_core.connectors import hub

    if args.models_command == "pull":
        folder = hub.pull_model(args.id, args.home, args.revision)
        print(f"hf:{args.id} is in the model cache: {folder}")
        return 0
    if args.models_command == "cached":
        rows = [asdict(m) for m in hub.cached_models(args.home)]
        return _print_rows(args, rows, ("ref", "size_bytes", "files", "revisions", "cache_dir"), "cached models")
    if args.models_command == "show":
        from studio_core.config import RunConfig
        from studio_core.methods import method_config

        config = RunConfig(method=method_config(args.method))
        answer = hub.model_details(args.id, args.home, config=config, refresh=args.refresh)
        _say_offline(answer)
        details = answer.data.to_dict()
        if args.json:
            print(json.dumps(details, indent=2, default=str))
            return 0
        table = Table(title=f"hf:{args.id}", show_header=False)
        for key in ("task", "library", "parameters", "architectures", "model_type", "licence", "gated",
                    "safetensors_bytes", "known_architecture", "usable", "not_usable"):
            table.add_row(key, str(details[key]))
        fit = details["fit"] or {}
        table.add_row(f"fits this machine ({fit.get('method', args.method)})",
                      str(fit.get("fits")) if fit.get("known") else fit.get("reason", ""))
        for reason in fit.get("reasons", []):
            table.add_row("", reason)
        _table_console().print(table)
        return 0
    answer = hub.search_models(args.query, task=args.task, library=args.library, sort=args.sort, limit=args.limit,
                               home=args.home, refresh=args.refresh)
    _say_offline(answer)
    return _print_rows(args, answer.data, ("id", "task", "library", "downloads", "likes", "gated"), "Hub models")


def _say_offline(answer) -> None:
    if answer.offline:
        err.print(f"[yellow]{escape(answer.offline)}[/]; showing the answer cached at "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(answer.fetched_at))}")


def _print_rows(args, rows: list[dict], columns: tuple[str, ...], title: str) -> int:
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    _table_console().print(table)
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    """Start Streamlit with every server option explicit (share.streamlit_options), whatever the working folder."""
    import subprocess

    from studio_core import share
    from studio_core.runs import studio_home

    if (args.data_roots or args.new_token) and not args.share:
        raise InputError("--data-root and --new-token apply to a shared studio; add --share")
    roots = [Path(r).expanduser().resolve() for r in args.data_roots]
    for given, root in zip(args.data_roots, roots):
        if not root.is_dir():
            raise InputError(f"--data-root {given}: no such folder")
    home = studio_home(args.home)
    if args.share:
        token = share.ensure_token(home, renew=args.new_token)
        where = escape(str(share.token_path(home)))
        err.print(f"[bold]shared studio[/]: anyone with this URL can use it (token in {where}):")
        for host in _lan_hosts():
            print(f"http://{host}:{args.port}/?token={token}", flush=True)
    else:
        print(f"http://127.0.0.1:{args.port}/", flush=True)
    proc = subprocess.Popen(share.streamlit_command(args.port, args.share),
                            env=share.studio_environment(home, args.share, roots), preexec_fn=share.die_with_parent)
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Streamlit got the same Ctrl-C; let it shut down
        return proc.wait()


def _lan_hosts() -> list[str]:
    """This machine's name and its IPv4 addresses on its network interfaces (loopback left out)."""
    import socket

    import psutil

    hosts = [socket.gethostname()]
    for addresses in psutil.net_if_addrs().values():  # read from the interfaces: no packet is sent anywhere
        hosts += [a.address for a in addresses if a.family == socket.AF_INET and not a.address.startswith("127.")]
    return list(dict.fromkeys(hosts))


def _run_dir(ref: str, home) -> Path:
    from studio_core.runs import RunStore

    path = Path(ref)
    return path if (path / "config.json").is_file() else RunStore(home).get(ref).path


def cmd_chat(args: argparse.Namespace) -> int:
    from studio_core.chat import ChatSession, Sampling, serve_jsonl

    sampling = Sampling.from_dict({"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
                                   "max_new_tokens": args.max_new_tokens, "seed": args.seed})
    session = ChatSession(_run_dir(args.run, args.home), args.source)
    if args.jsonl:
        def write(record: dict) -> None:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

        serve_jsonl(session, sys.stdin, write)
        return 0
    err.print(f"[bold]chat[/] with {escape(session.describe)}; {'greedy' if not args.temperature else 'sampling'}"
              + ("" if args.prompt else "; an empty line ends it"))
    sides = ("tuned", "base") if args.side == "both" else (args.side,)
    history: list[dict] = []
    prompts = iter(args.prompt) if args.prompt else iter(lambda: input("you> "), "")
    for text in prompts:
        history.append({"role": "user", "content": text})
        answers = {}
        for side in sides:
            print(f"{side}> ", end="", flush=True)
            answers[side] = ""
            for chunk in session.stream(side, history, args.system, sampling):
                answers[side] += chunk
                print(chunk, end="", flush=True)
            print(flush=True)
        history.append({"role": "assistant", "content": answers[sides[0]].strip()})  # the conversation goes on
    return 0                                                                          # with the first side's answer


COMMANDS = {"methods": cmd_methods, "run": cmd_run, "queue": cmd_queue, "runs": cmd_runs, "schema": cmd_schema, "hardware": cmd_hardware, "keys": cmd_keys,
            "verify": cmd_verify, "promote": cmd_promote}
COMMANDS["studio"] = cmd_studio
COMMANDS["models"] = cmd_models
COMMANDS["chat"] = cmd_chat


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        _error(e)
        return 2
    except StudioError as e:
        _error(e)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted: the run is left resumable (peft-studio run --resume RUN_ID)")
        return 130


if __name__ == "__main__":
    sys.exit(main())
