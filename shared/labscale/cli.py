"""The `labscale` command: validate, plan, run, results, render, submit, stage."""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from labscale.budget import ESTIMATED_STAGES, BudgetCheck, Estimate, PlanCosts, over_budget
from labscale.config import LoadedStudy, load_study
from labscale.config.study import Budget
from labscale.errors import BadInputError, LabscaleError
from labscale.executors.local import execute
from labscale.executors.publish import upload_sources, write_specs
from labscale.k8s.render import ClusterPlan, dump, image_warning, load_cluster_plan, render_documents
from labscale.k8s.submit import JobWatcher, api_client, submit
from labscale.plan import STAGES, Plan, build_plan
from labscale.plan.judging import plans_cell
from labscale.store import ArtifactStore, open_store


def _load(args: argparse.Namespace) -> tuple[LoadedStudy, Plan, ArtifactStore]:
    loaded = load_study(args.study)
    if getattr(args, "store", None):
        loaded = LoadedStudy(loaded.study.model_copy(update={"store": args.store}), loaded.path, loaded.base_dir)
    return loaded, build_plan(loaded), open_store(loaded.study.store)


def cmd_validate(args: argparse.Namespace) -> int:
    study = load_study(args.study).study
    cells = len(study.tasks) * sum(plans_cell(s, m) for m in study.models for s in study.settings)
    print(f"ok: {args.study} — study {study.name!r}: {len(study.tasks)} tasks × {len(study.models)} models × "
          f"{len(study.settings)} settings = {cells} cells")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    loaded, plan, store = _load(args)
    index = {run.prefix: i for i, run in enumerate(plan.runs, 1)}
    costs = PlanCosts(plan, store)
    cached = 0
    print(f"plan for {loaded.study.name} (store {store.uri}):")
    for i, run in enumerate(plan.runs, 1):
        done = costs.committed(run)
        cached += done
        deps = ",".join(str(index[p]) for p in run.inputs.values() if p in index) or "-"
        estimable = not done and run.stage in ESTIMATED_STAGES
        cost = _estimate_text(costs.estimate(run)) if estimable else ""
        print(f"{i:>4}  {'cached' if done else 'to run':<7} {run.title:<60} key={run.key}  after={deps}{cost}")
    print(f"{len(plan.runs)} runs: {cached} cached, {len(plan.runs) - cached} to run")
    check = costs.check()
    print(_budget_line(check, loaded.study.budget))
    pools = "; ".join(f"{pool} ≈ {hours:.3g} GPU-h (${usd:.4g})"
                      for pool, (hours, usd) in costs.gpu_hours_by_pool().items())
    print(f"open-model runs still to do, by pool: {pools}; API ≈ ${costs.api_usd():.4g}"
          + (" (~ = sizes assumed until prep runs)" if check.assumed else ""))
    return 0


def _budget_line(check: BudgetCheck, budget: Budget) -> str:
    pending = f" (~ {check.assumed} runs from assumed task sizes)" if check.assumed else ""
    limit = f"${budget.usd:.4g}" if budget.usd is not None else "none"
    return (f"cost: spent ${check.spent_usd:.4g} / {check.spent_kg:.3g} kg CO2e; still to spend ≈ "
            f"${check.planned_usd:.4g} / {check.planned_kg:.3g} kg CO2e{pending}; budget {limit}")


def _estimate_text(guess: Estimate) -> str:
    return f"  est={'~' if guess.assumed else ''}${guess.usd:.3g}/{guess.kg_co2e:.2g}kgCO2e"


def _print_results(plan: Plan, store: ArtifactStore) -> int:
    prefix = plan.aggregate.prefix
    if not store.is_committed(prefix):
        print(f"labscale: error: {plan.study.path}: no results for the current plan in {store.uri} — "
              f"fix: run `labscale run {plan.study.path}` first", file=sys.stderr)
        return 2
    manifest = store.require(prefix)
    with tempfile.TemporaryDirectory() as tmp:
        print(store.fetch_file(prefix, "results.md", Path(tmp) / "results.md", manifest).read_text(encoding="utf-8"))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _, plan, store = _load(args)
    report = execute(plan, store, after_prep=_budget_gate(plan, store, args.over_budget_ok))
    print(f"{len(report.executed)} runs executed, {len(report.cached)} cached, in {report.seconds:.1f}s",
          file=sys.stderr)
    return _print_results(plan, store)


def _budget_gate(plan: Plan, store: ArtifactStore, over_budget_ok: bool) -> Callable[[], None]:
    """What runs once prep is done: refuse (BadInputError) past the study's budget, or warn if allowed."""

    def enforce_budget() -> None:
        refusal = over_budget(plan, PlanCosts(plan, store).check())
        if refusal and not over_budget_ok:
            raise BadInputError(refusal)
        if refusal:
            print(f"labscale: warning: {refusal.split(' — ')[0]} (running anyway: --over-budget-ok)", file=sys.stderr)

    return enforce_budget


def cmd_results(args: argparse.Namespace) -> int:
    _, plan, store = _load(args)
    return _print_results(plan, store)


def _cluster_plan(args: argparse.Namespace) -> ClusterPlan:
    return load_cluster_plan(args.study, store=args.store, pool=args.pool, namespace=args.namespace,
                             registry=args.registry, tag=args.tag, queue=args.queue, priority_class=args.priority_class)


def _warn_images(cp: ClusterPlan) -> None:
    if warning := image_warning(cp.target):
        print(f"labscale: warning: {warning}", file=sys.stderr)


def cmd_render(args: argparse.Namespace) -> int:
    cp = _cluster_plan(args)
    dump(render_documents(cp, args.executor, args.schedule), args.out)
    _warn_images(cp)
    if args.write_specs:
        upload_sources(cp.plan, cp.store)
        write_specs(cp.plan, cp.store)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    cp = _cluster_plan(args)
    watcher = JobWatcher(api_client(args.kubeconfig, args.context), args.namespace)
    _warn_images(cp)
    report = submit(cp, watcher, poll_seconds=args.poll_seconds, max_parallel=args.max_parallel,
                    after_prep=_budget_gate(cp.plan, cp.store, args.over_budget_ok))
    print(f"{len(report.succeeded)} Jobs succeeded, {len(report.cached)} runs cached", file=sys.stderr)
    return 0


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML file")
    p.add_argument("--store", help="artifact store URI the pods can reach, e.g. s3://bucket/prefix")
    p.add_argument("--pool", choices=("cpu", "t4", "a100"), help="node pool (default: the study's `pool`)")
    p.add_argument("--namespace", default="labscale", help="Kubernetes namespace (default: labscale)")
    p.add_argument("--registry", default="localhost", help="image registry of labscale-<stage> images")
    p.add_argument("--tag", default="",
                   help="image tag (default: VERSION-GITSHA of this checkout, as `make images` tags it)")
    p.add_argument("--queue", help="Kueue LocalQueue: Jobs are created suspended for Kueue to admit")
    p.add_argument("--priority-class", help="Kueue WorkloadPriorityClass of the Jobs (with --queue)")


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
        if name == "run":
            p.add_argument("--over-budget-ok", action="store_true",
                           help="run even when the estimate exceeds the study's budget")
        p.set_defaults(func=func)
    p = sub.add_parser("render", help="render a study as Kubernetes Jobs or an Argo (Cron)Workflow")
    _cluster_args(p)
    p.add_argument("--executor", choices=("kubernetes", "argo"), default="kubernetes")
    p.add_argument("--out", type=Path, help="write one file per manifest here (default: stdout)")
    p.add_argument("--schedule", help='argo: emit a CronWorkflow on this cron schedule, e.g. "0 3 * * 1"')
    p.add_argument("--write-specs", action="store_true",
                   help="also upload the study's data files and the run specs to the store (needed before applying)")
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("submit", help="run a study on Kubernetes as Jobs in dependency order and wait for them")
    _cluster_args(p)
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG or ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--poll-seconds", type=float, default=5.0, help="how often Job status is read")
    p.add_argument("--max-parallel", type=int, default=8, help="most Jobs running at once")
    p.add_argument("--over-budget-ok", action="store_true", help="run even when the estimate exceeds the budget")
    p.set_defaults(func=cmd_submit)
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
