"""The `labscale` command: validate, plan, run, stage, results."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from labscale.config import LoadedStudy, load_study
from labscale.errors import LabscaleError
from labscale.plan import STAGES, Plan, build_plan
from labscale.store import ArtifactStore, open_store


def _load(args: argparse.Namespace) -> tuple[LoadedStudy, Plan, ArtifactStore]:
    loaded = load_study(args.study)
    if getattr(args, "store", None):
        loaded = LoadedStudy(loaded.study.model_copy(update={"store": args.store}), loaded.path, loaded.base_dir)
    return loaded, build_plan(loaded), open_store(loaded.study.store)


def cmd_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study).study
    cells = len(study.tasks) * len(study.models) * len(study.settings)
    print(f"ok: {args.study} — study {study.name!r}: {len(study.tasks)} tasks × {len(study.models)} models × "
          f"{len(study.settings)} settings = {cells} cells")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    loaded, plan, store = _load(args)
    index = {run.prefix: i for i, run in enumerate(plan.runs, 1)}
    cached = 0
    print(f"plan for {loaded.study.name} (store {store.uri}):")
    for i, run in enumerate(plan.runs, 1):
        done = store.is_committed(run.prefix)
        cached += done
        deps = ",".join(str(index[p]) for p in run.inputs.values() if p in index) or "-"
        print(f"{i:>4}  {'cached' if done else 'to run':<7} {run.title:<60} key={run.key}  after={deps}")
    print(f"{len(plan.runs)} runs: {cached} cached, {len(plan.runs) - cached} to run")
    return 0


def _print_results(plan: Plan, store: ArtifactStore) -> int:
    prefix = plan.aggregate.prefix
    if not store.is_committed(prefix):
        print(f"labscale: error: {plan.study.path}: no results for the current plan in {store.uri} — "
              f"fix: run `labscale run {plan.study.path}` first", file=sys.stderr)
        return 2
    manifest = store.require(prefix)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(store.fetch_file(prefix, "results.md", Path(tmp) / "results.md", manifest).read_text())
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from labscale.executors.local import execute

    _, plan, store = _load(args)
    report = execute(plan, store)
    print(f"{len(report.executed)} runs executed, {len(report.cached)} cached, in {report.seconds:.1f}s",
          file=sys.stderr)
    return _print_results(plan, store)


def cmd_results(args: argparse.Namespace) -> int:
    _, plan, store = _load(args)
    return _print_results(plan, store)


def cmd_stage(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"labscale.jobs.{args.name}")
    return module.main(["--spec", args.spec])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("validate", cmd_validate, "check a study file"),
        ("plan", cmd_plan, "print the DAG of stage runs, their keys and which are cached"),
        ("run", cmd_run, "run a study locally (cached runs are skipped) and print its results"),
        ("results", cmd_results, "print the results table of a study's current plan"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("study", help="study YAML file")
        if name != "validate":
            p.add_argument("--store", help="artifact store URI (overrides the study's `store`)")
        p.set_defaults(func=func)
    p = sub.add_parser("stage", help="run one stage of one RunSpec (what a container runs)")
    p.add_argument("name", choices=STAGES)
    p.add_argument("--spec", required=True, help="<store-uri>/specs/<stage>/<key>.json")
    p.set_defaults(func=cmd_stage)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabscaleError as exc:
        print(f"labscale: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("labscale: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
