"""The `raysearch` command line: argument parsing and dispatch only.

    raysearch train SPEC [--set KEY=VALUE ...] [--output DIR | --storage URI] [--address ADDR] [--dry-run]
    raysearch tune SPEC [--trials N] [--concurrent N] [--resume] [--dry-run] [...]
    raysearch ablate SPEC [--base FILE|DIR] [--resume] [--dry-run] [...]
    raysearch report DIR ; raysearch export DIR --top K --to FOLDER
    raysearch compare DIR... [--metric M] [--out DIR] [--allow-different-data]
    raysearch compact DIR
    raysearch methods [NAME]
    raysearch datasets

Bad input (a spec error, missing data files) prints one line naming the file, the key
and what was expected, and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from raysearch import __version__

__all__ = ["main", "build_parser"]


def _add_spec_args(p: argparse.ArgumentParser, resumable: bool = False) -> None:
    if resumable:
        p.add_argument("spec", nargs="?", help="the spec YAML file (see search_spaces/); with --resume --output DIR "
                                               "it may be left out: DIR/spec.yaml is the spec")
    else:
        p.add_argument("spec", help="the spec YAML file (see search_spaces/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key; VALUE is YAML (e.g. --set train.epochs=2 --set data.classes=[0,1])",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--output", help="the experiment folder or URI (default: STORAGE/<name>)")
    where.add_argument("--storage", default="raysearch-results",
                       help="where experiments live: a local folder or a URI such as s3://bucket/prefix or "
                            "gs://bucket/prefix (pyarrow filesystems; S3 options go in the query, e.g. "
                            "?region=us-west-2); the experiment is STORAGE/<name> (default: raysearch-results)")
    p.add_argument("--address", help="Ray cluster address ('auto' on a cluster node); default: start a local Ray")
    p.add_argument("--num-cpus", type=_positive_int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's and Optuna's own log lines on the terminal (they always go to "
                        "DIR/raysearch.log)")


def _add_log_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", action="append", default=[], metavar="TRACKER",
                   help="also send every evaluation to mlflow or wandb (repeatable or comma-separated; "
                        "pip install 'raysearch[trackers]'). MLflow: DIR/mlflow.db unless MLFLOW_TRACKING_URI "
                        "is set; W&B: offline runs in DIR/wandb unless WANDB_MODE is set. TensorBoard curves are "
                        "always written (DIR/tensorboard/<run>/<class>/)")


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse prints the message and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raysearch",
        description="Hyperparameter searches and ablations for self-supervised image anomaly detection on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"raysearch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train one config over the spec's classes through Ray Train")
    _add_spec_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved spec and the plan (classes, epochs, resources, output); start nothing")
    p.add_argument("--quiet", action="store_true", help="no progress line or summary")

    p = sub.add_parser("tune", help="search the spec's space with Ray Tune + Optuna (ASHA early stopping)")
    _add_spec_args(p, resumable=True)
    p.add_argument("--trials", type=_positive_int, help="number of trials (default: search.trials)")
    p.add_argument("--concurrent", type=_positive_int, help="trials at a time (default: search.concurrent)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted sweep in --output")
    p.add_argument("--dry-run", action="store_true", help="print the resolved search and its cost; start nothing")
    _add_log_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress line or summary")

    p = sub.add_parser("ablate", help="run the spec's ablation factors x seeds as a Ray Tune grid")
    _add_spec_args(p, resumable=True)
    p.add_argument("--base", help="the full model: an exported config file or an experiment folder "
                                  "(its best trial); default: the spec's own values")
    p.add_argument("--resume", action="store_true", help="continue the interrupted ablation in --output")
    p.add_argument("--dry-run", action="store_true",
                   help="print the variants with their overrides, seeds, classes and runs; start nothing")
    _add_log_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress line or summary")

    p = sub.add_parser("report", help="write DIR/report/: tables, plots, report.md and report.html")
    p.add_argument("experiment", help="an experiment folder (from train, tune or ablate)")
    p.add_argument("--to", help="where to write (default: EXPERIMENT/report)")

    p = sub.add_parser("export", help="write the best configurations as spec files that `raysearch train` runs")
    p.add_argument("experiment", help="an experiment folder")
    p.add_argument("--top", type=_positive_int, default=1, help="how many configurations (default 1)")
    p.add_argument("--to", default="best", help="folder for the spec files (default: best/)")

    p = sub.add_parser("compare", help="compare experiments: the configuration each one selected, per category "
                                       "(writes compare.{md,html,csv,tex,png}; prints the table)")
    p.add_argument("experiments", nargs="+", metavar="DIR",
                   help="experiment folders (sweeps, ablations, train runs)")
    p.add_argument("--metric", default="test_image_auroc",
                   help="the metric compared (default: test_image_auroc); each experiment's configuration "
                        "is still selected by its own objective")
    p.add_argument("--out", default="compare", help="where to write the files (default: ./compare)")
    p.add_argument("--allow-different-data", action="store_true",
                   help="compare experiments on different datasets too (refused by default: their categories "
                        "are other images)")

    p = sub.add_parser("compact", help="merge DIR's one-file-per-class result rows into a few large Parquet files "
                                       "(runs do it at their end; takes the experiment's lock)")
    p.add_argument("experiment", help="an experiment folder or URI")

    p = sub.add_parser("methods", help="list the methods and their parameters with defaults; with NAME, "
                                       "each parameter's type, allowed values, default and meaning")
    p.add_argument("name", nargs="?", help="a method: print its parameters as a table")
    sub.add_parser("datasets", help="list the datasets and where their files are expected")
    return parser


def _output_for(args: argparse.Namespace, name: str) -> str:
    """The experiment folder: ``--output``, or ``--storage``/name; a local path made absolute."""
    from raysearch.store.results import check_output, join

    out = args.output or join(args.storage, name)
    out = out if "://" in out else os.path.abspath(os.path.expanduser(out))
    check_output(out)
    return out


def _recorded_spec(args: argparse.Namespace):
    """The spec an experiment folder recorded (``--resume --output DIR`` without a SPEC)."""
    from raysearch.config.schema import SpecError
    from raysearch.config.spec import spec_from_text
    from raysearch.store import results

    if not (getattr(args, "resume", False) and args.output):
        raise SpecError(f"a spec file is required unless --resume --output DIR continues the experiment in DIR "
                        f"(e.g. raysearch {args.command} SPEC, or raysearch {args.command} --resume --output DIR)",
                        source=args.command)
    output = args.output if "://" in args.output else os.path.abspath(os.path.expanduser(args.output))
    uri = results.join(output, "spec.yaml")
    if not results.exists(uri):
        raise SpecError(f"no spec.yaml in {results.redact(output)} (the resolved spec that tune and ablate write); "
                        "give the spec file too", key="--resume")
    return spec_from_text(results.read_bytes(uri).decode(), results.redact(uri), args.overrides)


def _checked_spec(args: argparse.Namespace):
    """Load the spec and check that its data is there, errors attributed to the spec file."""
    from raysearch.config.schema import SpecError
    from raysearch.config.spec import load_spec
    from raysearch.data import check_data, check_other_categories

    spec = load_spec(args.spec, args.overrides) if args.spec is not None else _recorded_spec(args)
    if getattr(args, "dry_run", False):
        return spec  # a plan needs no data where the spec lists its classes
    try:
        check_data(spec.data)
        check_other_categories(spec.data, spec.selection.anomalies)
    except SpecError as err:
        raise err.located(spec.source) from None
    _print_notes(spec)
    return spec


def _print_notes(spec) -> None:
    """The method's warnings about this spec on this machine (stderr), before Ray starts."""
    from raysearch.config import registry
    from raysearch.config.space import categorical_choices

    for line in registry.method_class(spec.method).notes(spec.params, categorical_choices(spec.search)):
        print(line, file=sys.stderr)


def _cmd_train(args: argparse.Namespace) -> int:
    spec = _checked_spec(args)
    if args.dry_run:
        from raysearch.run.plan import train_dry_run

        train_dry_run(spec, _output_for(args, spec.name), address=args.address, num_cpus=args.num_cpus)
        return 0
    from raysearch.run.logfile import library_logs
    from raysearch.run.runner import run_train

    output = _output_for(args, spec.name)
    with library_logs(output, verbose=args.verbose):
        code, _ = run_train(spec, output, address=args.address, num_cpus=args.num_cpus, quiet=args.quiet)
    return code


def _cmd_tune(args: argparse.Namespace) -> int:
    from raysearch.run.tuning import dry_run, run_tune

    spec = _checked_spec(args)
    if args.dry_run:
        dry_run(spec, trials=args.trials, concurrent=args.concurrent)
        return 0
    from raysearch.run.logfile import library_logs

    output = _output_for(args, spec.name)
    log = _trackers(args, output)
    with library_logs(output, verbose=args.verbose):
        return run_tune(spec, output, address=args.address, num_cpus=args.num_cpus, trials=args.trials,
                        concurrent=args.concurrent, resume=args.resume, quiet=args.quiet, log=log)


def _cmd_ablate(args: argparse.Namespace) -> int:
    from raysearch.run.ablation import dry_run, run_ablate

    spec = _checked_spec(args)
    if args.dry_run:
        dry_run(spec, base=args.base)
        return 0
    from raysearch.run.logfile import library_logs

    output = _output_for(args, f"{spec.name}-ablation")
    log = _trackers(args, output)
    with library_logs(output, verbose=args.verbose):
        return run_ablate(spec, output, base=args.base, address=args.address, num_cpus=args.num_cpus,
                          resume=args.resume, quiet=args.quiet, log=log)


def _trackers(args: argparse.Namespace, output: str) -> tuple[str, ...]:
    """The trackers of ``--log``, their packages checked before Ray starts (a missing one: exit 2)."""
    from raysearch.train.trackers import check_trackers, parse_log

    names = parse_log(args.log)
    if not args.resume:  # a resumed run keeps the trackers it started with
        check_trackers(names, output)
    return names


def _experiment_dir(path: str) -> str:
    from raysearch.config.schema import SpecError
    from raysearch.store import results

    if not results.exists(results.join(path, "results")):
        raise SpecError("not an experiment folder: it has no results/ (run raysearch train, tune or ablate first)",
                        source=path)
    return path


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis.report import write_report
    from raysearch.store.results import check_output

    if args.to is not None:
        check_output(args.to, key="--to")
    out = write_report(_experiment_dir(args.experiment), out=args.to)
    print(f"report: {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from analysis.export import export_best, rerun_command
    from raysearch.config.schema import SpecError
    from raysearch.store.results import check_output

    if args.top < 1:
        raise SpecError(f"expected --top >= 1, got {args.top}", source="--top")
    check_output(args.to, key="--to")
    notes: list[str] = []
    try:
        paths = export_best(_experiment_dir(args.experiment), top=args.top, to=args.to, notes=notes)
    except ValueError as err:
        raise SpecError(str(err)) from None  # the message names the folder
    for p in paths:
        print(f"{p}    re-run: {rerun_command(p)}")
    for note in notes:
        print(note)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from analysis.compare import write_comparison
    from raysearch.config.schema import SpecError
    from raysearch.store.results import check_output

    check_output(args.out, key="--out")
    folders = [_experiment_dir(path) for path in args.experiments]
    try:
        comparison = write_comparison(folders, out=args.out, metric=args.metric,
                                      allow_different_data=args.allow_different_data)
    except ValueError as err:
        raise SpecError(str(err)) from None  # the message names the folder or the metric
    print(comparison.markdown())
    for note in comparison.notes:
        print()
        print(note)
    if comparison.params_markdown():
        print("\nParameters that differ between the selected configurations:\n" + comparison.params_markdown())
    print(f"compare: {os.path.abspath(args.out)} (compare.md, .html, .csv, .tex, .png, compare_params.csv)", file=sys.stderr)
    return 0


def _cmd_compact(args: argparse.Namespace) -> int:
    from raysearch.store import results
    from raysearch.store.lock import ExperimentLock

    path = _experiment_dir(args.experiment)
    with ExperimentLock(path, "compact"):  # a held lock: LockedError names the owner, exit 2
        done = results.compact(path)
    print(f"compact: {results.redact(results.results_dir(path))}: {done.summary()}")
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from raysearch.config import registry
    from raysearch.config.schema import SpecError, flatten

    if args.name is None:
        for name in registry.method_names():
            print(f"{name}: {registry.describe(name)}")
            for key, value in flatten(registry.params_class(name)()).items():
                print(f"    params.{key} = {value!r}")
        return 0
    if args.name not in registry.METHODS:
        raise SpecError(f"unknown method {args.name!r}; known methods: {', '.join(registry.method_names())}")
    from raysearch.config.selection import objective_note

    print(f"{args.name}: {registry.describe(args.name)}")
    print(objective_note(registry.params_class(args.name)))
    print()
    for line in _params_table(registry.params_class(args.name)):
        print(line)
    return 0


def _params_table(cls: type) -> list[str]:
    """``params.<key>  type  allowed  default  meaning``, one aligned row per parameter."""
    from raysearch.config.schema import describe_fields

    def shown(value: object) -> str:
        return value if isinstance(value, str) and value else repr(value)

    rows = [("key", "type", "allowed", "default", "meaning")]
    rows += [(f"params.{d.key}", d.type, d.allowed, shown(d.default), d.help) for d in describe_fields(cls)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[4]]).rstrip() for row in rows]


def _cmd_datasets(args: argparse.Namespace) -> int:
    from raysearch.data import DATASETS, describe_dataset

    for name in sorted(DATASETS):
        print(f"{name}: {describe_dataset(name)}")
    return 0


COMMANDS = {
    "train": _cmd_train,
    "tune": _cmd_tune,
    "ablate": _cmd_ablate,
    "report": _cmd_report,
    "export": _cmd_export,
    "compare": _cmd_compare,
    "compact": _cmd_compact,
    "methods": _cmd_methods,
    "datasets": _cmd_datasets,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    from raysearch.config.schema import SpecError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _own_warnings_in_one_line()
    try:
        return _exit_code(COMMANDS[args.command](args))
    except SpecError as err:
        print(f"raysearch: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except OSError as err:  # a full disk, a read-only or vanished folder: one line, no traceback
        print(f"raysearch: error: {_os_error(err)}; what was stored before is kept: free the space (or fix "
              "the folder) and run the command again (a sweep or an ablation with --resume --output DIR)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("raysearch: interrupted", file=sys.stderr)
        return 130


def _own_warnings_in_one_line() -> None:
    """raysearch's own warnings (an unreadable result file, ...) print as one line,
    ``raysearch: warning: ...``, not with the file and source line that raised them."""
    import warnings

    shown = warnings.formatwarning
    if getattr(shown, "_raysearch", False):
        return

    def formatwarning(message, category, filename, lineno, line=None):
        if category.__module__.startswith("raysearch"):
            return f"raysearch: warning: {message}\n"
        return shown(message, category, filename, lineno, line)

    formatwarning._raysearch = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning


def _os_error(err: OSError) -> str:
    """``PATH: No space left on device (ENOSPC)``: the path and the errno of a failed
    file operation (pyarrow's errors carry them in their text only)."""
    import errno

    name = errno.errorcode.get(err.errno) if err.errno else None
    text = err.strerror if err.strerror else str(err).splitlines()[0]
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{text}" + (f" ({name})" if name else "")


def _exit_code(code: int) -> int:
    """``code``, or the end of the process with it when a signal to the whole process
    group also ended the local Ray: Ray's shutdown at exit would wait a minute for it."""
    if code in (130, 143) and "ray" in sys.modules:
        from raysearch.run.ray_setup import ray_reachable

        if sys.modules["ray"].is_initialized() and not ray_reachable():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
