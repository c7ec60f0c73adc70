"""The `labscale` command: validate, plan, run, results, render, submit, stage, store."""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import webbrowser
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from labscale.budget import ESTIMATED_STAGES, BudgetCheck, Estimate, PlanCosts, over_budget
from labscale.config import LoadedStudy, load_study
from labscale.config.study import Budget
from labscale.errors import EXIT_BAD_INPUT, BadInputError, IntegrityError, LabscaleError
from labscale.executors.local import execute
from labscale.executors.publish import upload_sources, write_specs
from labscale.k8s.render import ClusterPlan, dump, image_warning, load_cluster_plan, render_documents
from labscale.k8s.submit import JobWatcher, api_client, submit
from labscale.models.loading import cache_dir
from labscale.models.memory import auto_batch, pool_gpu_memory_gib
from labscale.params import OpenGenerateParams
from labscale.plan import STAGES, Plan, RunSpec, build_plan
from labscale.plan.judging import plans_cell
from labscale.store import ArtifactStore, open_store
from labscale.store.file import FileBackend
from labscale.store.maintenance import GcPolicy, References, apply_gc, parse_age, plan_gc, size_text, verify

RESULT_FILES = ("results.csv", "results.md", "report.html")
"""What the aggregate run commits for people to read (`labscale results --path` lists where)."""


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
    unfit: list[str] = []
    print(f"plan for {loaded.study.name} (store {store.uri}):")
    for i, run in enumerate(plan.runs, 1):
        done = costs.committed(run)
        cached += done
        deps = ",".join(str(index[p]) for p in run.inputs.values() if p in index) or "-"
        estimable = not done and run.stage in ESTIMATED_STAGES
        cost = _estimate_text(costs.estimate(run)) if estimable else ""
        batch = (f"  engine={run.params.engine}{_dtype_text(run.params)}{_batch_text(run, loaded.base_dir, unfit)}"
                 if isinstance(run.params, OpenGenerateParams) else "")
        print(f"{i:>4}  {'cached' if done else 'to run':<7} {run.title:<60} key={run.key}  after={deps}{cost}{batch}")
    print(f"{len(plan.runs)} runs: {cached} cached, {len(plan.runs) - cached} to run")
    for line in dict.fromkeys(unfit):
        print(f"batch: {line}")
    check = costs.check()
    print(_budget_line(check, loaded.study.budget))
    pools = "; ".join(f"{pool} ≈ {hours:.3g} GPU-h (${usd:.4g})"
                      for pool, (hours, usd) in costs.gpu_hours_by_pool().items())
    print(f"open-model runs still to do, by pool: {pools}; API ≈ ${costs.api_usd():.4g}"
          + (" (~ = sizes assumed until prep runs)" if check.assumed else ""))
    return 0


def _dtype_text(params: OpenGenerateParams) -> str:
    """A model's dtype when the study names one (auto: by the device, labscale.models.loading)."""
    return "" if params.model.dtype == "auto" else f" dtype={params.model.dtype}"


def _batch_text(run: RunSpec, base_dir: Path, unfit: list[str]) -> str:
    """An open model's generate batch: the study's number, or `auto` planned for the run's pool
    (labscale.models.memory) at the longest prompt the model takes; the run sizes it again at its
    measured prompts, so it may pick more. A model that does not fit adds its reason to `unfit`."""
    params = run.params
    assert isinstance(params, OpenGenerateParams)
    if isinstance(params.batch_size, int):
        return f"  batch={params.batch_size}"
    gpu = pool_gpu_memory_gib(run.pool)
    try:
        batch = auto_batch(params.model, gpu_memory_gib=gpu, prompt_tokens=params.model.max_length,
                           max_new_tokens=params.max_new_tokens, base_dir=base_dir)
    except BadInputError as exc:
        unfit.append(f"{run.pool}: {exc}")
        return "  batch=auto→does not fit"
    if gpu is None:
        return f"  batch=auto→{batch.batch} (cpu)"
    return f"  batch=auto→≥{batch.batch} ({run.pool} {gpu:g} GiB, ≤{batch.prompt_tokens}+{batch.max_new_tokens} tokens)"


def _budget_line(check: BudgetCheck, budget: Budget) -> str:
    pending = f" (~ {check.assumed} runs from assumed task sizes)" if check.assumed else ""
    limit = f"${budget.usd:.4g}" if budget.usd is not None else "none"
    return (f"cost: spent ${check.spent_usd:.4g} / {check.spent_kg:.3g} kg CO2e; still to spend ≈ "
            f"${check.planned_usd:.4g} / {check.planned_kg:.3g} kg CO2e{pending}; budget {limit}")


def _estimate_text(guess: Estimate) -> str:
    return f"  est={'~' if guess.assumed else ''}${guess.usd:.3g}/{guess.kg_co2e:.2g}kgCO2e"


def _require_results(plan: Plan, store: ArtifactStore) -> bool:
    """Whether the current plan's aggregate run is committed (if not, say what to run)."""
    if store.is_committed(plan.aggregate.prefix):
        return True
    print(f"labscale: error: {plan.study.path}: no results for the current plan in {store.uri} — "
          f"fix: run `labscale run {plan.study.path}` first", file=sys.stderr)
    return False


def _print_results(plan: Plan, store: ArtifactStore) -> int:
    if not _require_results(plan, store):
        return EXIT_BAD_INPUT
    prefix = plan.aggregate.prefix
    manifest = store.require(prefix)
    with tempfile.TemporaryDirectory() as tmp:
        print(store.fetch_file(prefix, "results.md", Path(tmp) / "results.md", manifest).read_text(encoding="utf-8"))
    return 0


def result_paths(plan: Plan, store: ArtifactStore) -> list[str]:
    """Where the results files of the plan's aggregate run are: local paths on a file:// store, else URIs."""
    prefix = plan.aggregate.prefix
    if isinstance(store.backend, FileBackend):
        return [str(store.backend.root / prefix / name) for name in RESULT_FILES]
    return [f"{store.uri}/{prefix}/{name}" for name in RESULT_FILES]


def cmd_run(args: argparse.Namespace) -> int:
    _, plan, store = _load(args)
    report = execute(plan, store, after_prep=_budget_gate(plan, store, args.over_budget_ok))
    print(f"{len(report.executed)} runs executed, {len(report.cached)} cached, in {report.seconds:.1f}s",
          file=sys.stderr)
    code = _print_results(plan, store)
    if code == 0:
        print("results files:\n" + "".join(f"  {path}\n" for path in result_paths(plan, store)), end="",
              file=sys.stderr)
    return code


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
    if not (args.path or args.open):
        return _print_results(plan, store)
    if not _require_results(plan, store):
        return EXIT_BAD_INPUT
    if args.path:
        print("\n".join(result_paths(plan, store)))
    if args.open:
        report = _local_report(plan, store)
        if not webbrowser.open(report.as_uri()):
            print(f"labscale: warning: no web browser found; open {report} yourself", file=sys.stderr)
    return 0


def _local_report(plan: Plan, store: ArtifactStore) -> Path:
    """report.html as a local file: in place on a file:// store, else downloaded (verified) into the cache."""
    prefix = plan.aggregate.prefix
    if isinstance(store.backend, FileBackend):
        return store.backend.root / prefix / "report.html"
    dest = cache_dir() / "reports" / prefix / "report.html"
    return store.fetch_file(prefix, "report.html", dest)


def _store_of(target: str) -> ArtifactStore:
    """The store a `labscale store` command works on: a study file's store, a store URI or a store directory."""
    path = Path(target)
    if "://" in target:
        store = open_store(target)
    elif path.suffix in (".yaml", ".yml"):
        store = open_store(load_study(path).study.store)
    elif path.is_dir():
        store = open_store(f"file://{path.resolve()}")
    else:
        raise BadInputError(f"{target}: not a study file, a store URI or a store directory — fix: pass "
                            "STUDY.yaml, file://PATH, s3://BUCKET/PREFIX or an existing store directory")
    if isinstance(store.backend, FileBackend) and not store.backend.root.is_dir():
        raise BadInputError(f"{store.uri}: no such store directory — fix: check the path (or the study's `store`)")
    return store


def cmd_store(args: argparse.Namespace) -> int:
    if args.action == "gc":
        return cmd_store_gc(args)
    if args.apply or args.older_than or args.keep_study:
        raise BadInputError("labscale store verify: --apply, --older-than and --keep-study are options of "
                            "`store gc` — fix: drop them")
    return cmd_store_verify(args)


def cmd_store_verify(args: argparse.Namespace) -> int:
    store = _store_of(args.target)
    with tqdm(total=0, unit="B", unit_scale=True, desc="verify", file=sys.stderr, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = verify(store, progress)
    for problem in report.problems:
        print(f"problem: {problem}")
    print(report.summary())
    return 0 if report.clean else IntegrityError.exit_code  # corrupt artifacts: as when a stage reads one (2)


def _references(studies: list[str]) -> References:
    """The runs and sources the current plans of `studies` reference."""
    runs: set[str] = set()
    sources: set[str] = set()
    for study in studies:
        plan = build_plan(load_study(study))
        runs |= {run.prefix for run in plan.runs}
        sources |= set(plan.uploads)
    return References(frozenset(runs), frozenset(sources))


def cmd_store_gc(args: argparse.Namespace) -> int:
    store = _store_of(args.target)
    keep = None
    if args.keep_study:
        target_is_study = "://" not in args.target and Path(args.target).suffix in (".yaml", ".yml")
        studies = [*([args.target] if target_is_study else []), *args.keep_study]
        for study in studies:
            if (other := open_store(load_study(study).study.store).uri) != store.uri:
                print(f"labscale: warning: {study} uses store {other}, not {store.uri}", file=sys.stderr)
        keep = _references(studies)
    plan = plan_gc(store, GcPolicy(older_than=parse_age(args.older_than or "7d"), keep=keep))
    for kept in plan.kept:
        print(f"keep {kept.prefix}: {kept.why}")
    if args.apply and plan.removals:
        with tqdm(total=plan.objects, unit="obj", desc="gc", file=sys.stderr, disable=None) as bar:
            apply_gc(store, plan, bar.update)
    verb = "removed" if args.apply else "would remove"
    for removal in plan.removals:
        print(f"{verb} {removal.describe()}")
    total = f"{len(plan.removals)} prefixes, {plan.objects} objects, {size_text(plan.bytes)}"
    print(f"{'removed' if args.apply else 'dry run: would remove'} {total} from {store.uri}"
          + ("" if args.apply else " — rerun with --apply to delete"))
    if keep is None:
        print("(runs no current plan references are kept: name the studies to keep with --keep-study STUDY)")
    return 0


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
    print(f"{len(report.succeeded)} runs succeeded in {len(report.jobs)} Jobs, {len(report.cached)} runs cached",
          file=sys.stderr)
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
    return module.main([arg for spec in args.spec for arg in ("--spec", spec)])


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
        if name == "results":
            p.add_argument("--path", action="store_true",
                           help="print only where results.csv, results.md and report.html are (one per line)")
            p.add_argument("--open", action="store_true", help="open report.html in a web browser")
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
    p = sub.add_parser("stage", help="run one stage of one RunSpec, or of a group, one after the other (what a container runs)")
    p.add_argument("name", choices=STAGES)
    p.add_argument("--spec", required=True, action="append",
                   help="<store-uri>/specs/<stage>/<key>.json (repeat: a group of runs in one process)")
    p.set_defaults(func=cmd_stage)
    p = sub.add_parser("store", help="check (verify) or clean (gc) an artifact store",
                       description="verify: re-checksum every committed artifact; exit 0 when all match, 2 when "
                                   "a file is corrupt, truncated or missing. gc: remove checkpoints of committed "
                                   "train runs, uncommitted leftovers older than --older-than and (with "
                                   "--keep-study) committed runs no current plan references; a dry run unless --apply.")
    p.add_argument("action", choices=("verify", "gc"))
    p.add_argument("target", metavar="STORE_OR_STUDY", help="a store URI (file://…, s3://…), a store directory, "
                                                           "or a study file (its store)")
    p.add_argument("--apply", action="store_true", help="gc: delete (default: only print what would be deleted)")
    p.add_argument("--older-than", metavar="AGE",
                   help="gc: remove uncommitted leftovers last written longer ago than this (e.g. 12h, 7d; default 7d)")
    p.add_argument("--keep-study", action="append", default=[], metavar="STUDY",
                   help="gc: also remove committed runs that no current plan of these studies (and of a study "
                        "given as STORE_OR_STUDY) references; repeatable")
    p.set_defaults(func=cmd_store)
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
