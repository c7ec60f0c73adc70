"""aggregate's statistics and report on a demo-like study whose score runs are constructed in a store:
results.csv/.parquet/.md, report.html (parsed, and opened in headless Chromium), drift between runs."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import require_binaries, small_study

from labscale.config import load_study
from labscale.jobs import aggregate
from labscale.plan import build_plan
from labscale.spec import RunSpec, run_key
from labscale.config.study import ReportReference
from labscale.params import ReportParams
from labscale.report.analysis import CellStats, analyze, item_columns
from labscale.report.drift import drift_rows
from labscale.report.html import page, verdict_section
from labscale.report.results import ResultsSection, results_frame
from labscale.report.runs import CellScores
from labscale.stage import run_stage
from labscale.stats import Interval
from labscale.store import ArtifactStore, open_store

MODELS = ("  - {id: tiny, path: tiny-llama, build: tiny-llama}\n"
          "  - {id: small, path: tiny-llama, build: tiny-llama, max_length: 1024}\n")  # differ, so their runs do
SETTINGS = "  - id: zero-shot\n  - {id: 3-shot, shots: 3}\n  - {id: ft, finetune: {max_steps: 2}}\n"
REPORT = "report: {reference: {model: small, setting: zero-shot}, margin: 0.05, bootstrap_samples: 500}\n"
ITEMS = 40
SETTING_IDS = ("zero-shot", "3-shot", "ft")
LABELS = ("SUPPORTS", "REFUTES", "NOT_ENOUGH_INFO")
QUALITY = {("tiny", "zero-shot"): 0.05, ("tiny", "3-shot"): 0.2, ("tiny", "ft"): 0.6,
           ("small", "zero-shot"): 0.55, ("small", "3-shot"): 0.6, ("small", "ft"): 0.8}
"""How good each (model, setting) is: tiny/ft ≈ small/zero-shot (yes), tiny/zero-shot far worse (no)."""


def _items(suite: str, quality: float, seed: int) -> list[dict[str, Any]]:
    """Per-item score records shaped like score's per_item.jsonl."""
    rng = np.random.default_rng(seed)
    if suite == "classification":
        correct = rng.random(ITEMS) < quality
        status = rng.choice(["valid", "resolvable", "unresolvable"], size=ITEMS, p=[0.8, 0.1, 0.1])
        return [{"id": f"i{i:03d}", "correct": bool(c), "status": str(s), "parsed_label": LABELS[i % 3]}
                for i, (c, s) in enumerate(zip(correct, status))]
    base = np.clip(quality + rng.normal(0, 0.08, ITEMS), 0, 1)
    return [{"id": f"i{i:03d}", "rouge1": b + 0.05, "rouge2": b * 0.5, "rougeL": b, "rougeLsum": b, "bertscore_f1": 0.8}
            for i, b in enumerate(base.tolist())]


def _corpus(suite: str, items: list[dict[str, Any]]) -> dict[str, float]:
    means = {k: float(np.mean([r[k] for r in items])) for k, v in items[0].items() if isinstance(v, (bool, float))}
    if suite == "classification":
        rates = {f"{s}_rate": float(np.mean([r["status"] == s for r in items]))
                 for s in ("valid", "resolvable", "unresolvable")}
        return {"accuracy": means["correct"], "f1_macro": means["correct"] * 0.9, **rates}
    return {**means, "bleu": 100 * means["rouge2"]}


def _commit(store: ArtifactStore, prefix: str, tmp: Path, metrics: dict[str, Any], files: dict[str, str] | None = None,
            cost: float = 0.01) -> None:
    out = tmp / prefix
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (out / name).write_text(text)
    store.commit(prefix, out, {"study": "small", "inputs": {}, "metrics": metrics, "cost_usd": cost,
                               "energy_kwh": cost / 10, "kg_co2e": cost / 30})


def commit_score(store: ArtifactStore, prefix: str, tmp: Path, suite: str, quality: float, seed: int) -> None:
    """A committed score run: per_item.jsonl and the corpus metrics of those items."""
    items = _items(suite, quality, seed)
    _commit(store, prefix, tmp, {"items": len(items), "scores": _corpus(suite, items)},
            {"per_item.jsonl": "".join(json.dumps(r, sort_keys=True) + "\n" for r in items)})


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunSpec, ArtifactStore, Path]:
    """The planned aggregate of a 2 tasks × 2 models × 3 settings study, its cells' runs constructed."""
    tmp = tmp_path_factory.mktemp("report")
    path = small_study(tmp, settings=SETTINGS, tasks=("notes", "claims"), models=MODELS)
    path.write_text(path.read_text() + REPORT)
    plan = build_plan(load_study(path))
    store = open_store(plan.study.study.store)
    for i, cell in enumerate(plan.cells):
        suite = "classification" if cell.task == "claims" else "summarization"
        commit_score(store, cell.score, tmp, suite, QUALITY[cell.model, cell.setting], seed=i)
        _commit(store, cell.generate, tmp, {"generation_seconds": 2.0 + i, "items_per_second": 20.0,
                                            "tokens_in": 4000, "tokens_out": 300}, cost=0.001 * (i + 1))
        if cell.train:
            _commit(store, cell.train, tmp, {"train_seconds": 60.0, "path": "lora-cpu"}, cost=0.05)
    assert run_stage(plan.aggregate, store, aggregate.run)
    return plan.aggregate, store, tmp


def fetched(spec: RunSpec, store: ArtifactStore, dest: Path) -> Path:
    store.fetch(spec.prefix, dest)
    return dest


class Page(HTMLParser):
    """The parts of report.html the tests look at: section titles, tables (as rows of cell texts) and
    SVGs per section."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.figures: list[dict[str, Any]] = []
        self.external: list[str] = []
        self.headings: list[str] = []
        """The h2 section titles, in page order."""
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = []
        elif tag == "figure":
            self.figures.append({"class": a.get("class"), "task": a.get("data-task"), "svg": 0})
        elif tag == "svg" and self.figures:
            self.figures[-1]["svg"] += 1
        if tag in ("script", "link", "img", "iframe") or any(k in ("src", "href") for k in a):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "h2" and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        for text in (self._cell, self._heading):
            if text is not None:
                text.append(data)

    def table_with(self, header: str) -> list[list[str]]:
        return next(t for t in self.tables if header in t[0])


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_results_files_carry_cis_costs_and_energy(study, tmp_path: Path) -> None:
    spec, store, _ = study
    out = fetched(spec, store, tmp_path)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["task"], r["model"], r["setting"]) for r in rows[:3]] == [("notes", "tiny", s) for s in SETTING_IDS]
    for r in rows:
        metric = "rougeL" if r["task"] == "notes" else "accuracy"
        assert float(r[f"{metric}_lo"]) <= float(r[metric]) <= float(r[f"{metric}_hi"])
        assert float(r["kwh"]) == pytest.approx(float(r["usd"]) / 10) and float(r["kg_co2e"]) > 0
        assert "bleu_lo" not in r and "f1_macro_lo" not in r  # corpus-only metrics: no CI
    parquet = pd.read_parquet(out / "results.parquet")
    assert list(parquet.columns) == list(rows[0]) and len(parquet) == 12
    md = (out / "results.md").read_text()
    assert "## notes" in md and "## claims" in md and "_lo" not in md and re.search(r"\|\s+kwh\s+\|\s+kg_co2e\s+\|", md)
    assert "Competitive with small / zero-shot (margin 0.05)" in md


def test_verdicts_and_comparisons(study) -> None:
    spec, store, _ = study
    report = store.require(spec.prefix).meta["metrics"]["report"]
    assert report["reference"] == {"model": "small", "setting": "zero-shot"} and report["margin"] == 0.05
    verdicts = {(v["task"], v["model"], v["setting"]): v for v in report["verdicts"]}
    assert len(verdicts) == 10  # every cell but the reference, per task
    assert verdicts["notes", "tiny", "zero-shot"]["verdict"] == "no"
    assert verdicts["notes", "small", "ft"]["verdict"] == "yes"
    assert verdicts["notes", "tiny", "ft"]["metric"] == "rougeL"
    assert verdicts["claims", "tiny", "zero-shot"]["verdict"] == "no"
    assert verdicts["claims", "tiny", "zero-shot"]["metric"] == "accuracy"
    for v in verdicts.values():
        expected = "yes" if v["diff_lo"] > -0.05 else "no" if v["diff_hi"] < -0.05 else "inconclusive"
        assert v["verdict"] == expected


def test_report_html_is_self_contained_with_tables_plots_and_verdicts(study, tmp_path: Path) -> None:
    spec, store, _ = study
    page = parse(fetched(spec, store, tmp_path) / "report.html")
    assert not page.external  # nothing fetched, no scripts
    results = page.table_with("rougeL")
    assert results[0][:3] == ["model", "setting", "n"] and "bleu †" in results[0] and "kg_co2e" in results[0]
    assert len(results) == 7 and all(r[2] == str(40) for r in results[1:])
    assert [(f["class"], f["task"], f["svg"]) for f in page.figures] == [("pareto", t, 1) for t in ("notes", "claims")]
    seeds = page.table_with("few-shot (3-shot)")
    assert seeds[0] == ["model", "zero-shot", "few-shot (3-shot)", "fine-tuned (ft)"]
    assert [r[0] for r in seeds[1:]] == ["tiny", "small"]
    verdicts = page.table_with("competitive")
    assert {r[-1] for r in verdicts[1:]} <= {"yes", "no", "inconclusive"} and len(verdicts) == 6
    assert "No earlier aggregate run of this study" in (tmp_path / "report.html").read_text()


def test_outputs_are_deterministic(study, tmp_path: Path) -> None:
    """The same aggregate over copies of the same runs, in another store: byte-identical outputs."""
    spec, store, _ = study
    fetched(spec, store, tmp_path / "first")
    other = open_store(f"file://{tmp_path / 'copy'}")
    for prefix in (p for c in spec.params.cells for p in (c.score, c.generate, c.train) if p):
        other.commit(prefix, tmp_path / prefix, store.fetch(prefix, tmp_path / prefix).meta)
    assert run_stage(spec, other, aggregate.run)
    fetched(spec, other, tmp_path / "second")
    for name in ("results.md", "results.csv", "results.parquet", "report.html"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


def _rerun(spec: RunSpec, store: ArtifactStore, **changes: Any) -> RunSpec:
    """The same aggregate with changed params (so a new key), run in the same store."""
    params = spec.params.model_copy(update=changes)
    new = spec.model_copy(update={"params": params, "key": run_key("aggregate", params, spec.inputs, "test")})
    assert run_stage(new, store, aggregate.run)
    return new


def test_drift_flags_a_changed_cell_and_nothing_when_unchanged(study, tmp_path: Path) -> None:
    spec, store, tmp = study
    report = spec.params.report.model_copy(update={"margin": 0.04})
    same = _rerun(spec, store, report=report)
    drift = store.require(same.prefix).meta["metrics"]["report"]["drift"]
    assert drift == {"previous": spec.prefix, "changed": 0, "flagged": 0}

    changed = next(c for c in spec.params.cells if (c.task, c.model, c.setting) == ("notes", "tiny", "3-shot"))
    moved_cell = changed.model_copy(update={"score": "score/changed0000000"})
    cells = [moved_cell if c is changed else c for c in spec.params.cells]
    commit_score(store, moved_cell.score, tmp, "summarization", 0.45, seed=99)  # was 0.2
    moved = _rerun(spec, store, cells=cells, report=report)
    drift = store.require(moved.prefix).meta["metrics"]["report"]["drift"]
    assert drift["previous"] in {spec.prefix, same.prefix} and drift["flagged"] >= 4  # rouge1/2/L/Lsum
    page = parse(fetched(moved, store, tmp_path) / "report.html")
    table = page.table_with("flag")
    flagged = {(r[1], r[2], r[3]) for r in table[1:] if r[-1] == "outside CI"}
    assert {("tiny", "3-shot", m) for m in ("rouge1", "rouge2", "rougeL", "rougeLsum")} <= flagged
    assert {r[2] for r in table[1:]} == {"3-shot"} and {r[1] for r in table[1:]} == {"tiny"}


def test_drift_rows_flag_only_values_outside_the_ci() -> None:
    def previous(**scores: float) -> CellScores:
        return CellScores(task="t", model="m", setting="s", scores=scores)

    cell = CellStats("t", "m", "s", {"rougeL": 0.50, "bleu": 20.0}, [], {},
                     {"rougeL": Interval(40, 0.50, 0.45, 0.55)})
    rows, unchanged = drift_rows([previous(rougeL=0.50, bleu=20.0)], [cell])
    assert rows == [] and unchanged == 1
    rows, unchanged = drift_rows([previous(rougeL=0.52, bleu=25.0)], [cell])
    assert [(r.metric, r.flagged) for r in rows] == [("rougeL", False), ("bleu", None)] and unchanged == 0
    rows, _ = drift_rows([previous(rougeL=0.40)], [cell])
    assert [(r.metric, r.flagged, round(r.delta, 2)) for r in rows] == [("rougeL", True, 0.1)]


def test_two_constant_cells_are_no_signal_and_the_verdict_rule_is_stated() -> None:
    """Reference and 3-shot both score 0 on every item: their Δ CI is [0, 0], which the margin rule
    alone would call "yes"; it is "no signal". A cell whose items vary against it is judged as usual, and so
    is a constant cell that differs from the constant reference (1 everywhere against 0: Δ says it all)."""
    params = ReportParams(reference=ReportReference(model="m", setting="zero-shot"), margin=0.02,
                          bootstrap_samples=200, confidence=0.9)
    ids = [f"i{i:02d}" for i in range(30)]

    def cell(setting: str, values: list[float]) -> CellStats:
        row = {"task": "claims", "model": "m", "setting": setting, "n": 30, "accuracy": float(np.mean(values))}
        return CellStats("claims", "m", setting, row, ids, {"accuracy": np.array(values, dtype=float)})

    cells = [cell("zero-shot", [0.0] * 30), cell("3-shot", [0.0] * 30), cell("ft", [0.0, 1.0] * 15),
             cell("oracle", [1.0] * 30)]
    analysis = analyze(cells, params)
    assert {r.a.setting: r.verdict for r in analysis.verdicts} == {"3-shot": "no signal", "ft": "yes", "oracle": "yes"}
    three_shot = next(r for r in analysis.verdicts if r.a.setting == "3-shot")
    assert (three_shot.comparison.diff.lo, three_shot.comparison.diff.hi) == (0.0, 0.0)  # what "yes" was made of

    md = ResultsSection("s", results_frame([c.row for c in cells]), analysis).markdown()
    assert ("Competitive with m / zero-shot (margin 0.02): yes = the 90 % paired bootstrap CI of Δ = "
            "mean(cell − reference) lies above −δ (one-sided α = 5 %)") in md
    assert "no signal = both cells score one and the same value on every item" in md
    assert re.search(r"\|\s+m\s+\|\s+3-shot\s+\|.*\|\s+no signal\s+\|", md)
    html = verdict_section(analysis).body
    assert "<tr class=no-signal>" in html and ".no-signal{" in page("s", html)
    assert "(one-sided α = 5 %)" in html


def test_item_columns_are_the_per_item_values_whose_mean_is_the_corpus_metric() -> None:
    records = [{"id": 1, "correct": True, "status": "valid", "parsed_label": "A", "arg_f1": 1.0},
               {"id": 2, "correct": False, "status": "unresolvable", "parsed_label": None, "arg_f1": 0.0}]
    ids, columns = item_columns(records)
    assert ids == ["1", "2"] and columns["accuracy"].tolist() == [1.0, 0.0]
    assert {k: v.tolist() for k, v in columns.items() if k.endswith("_rate")} == {
        "valid_rate": [1.0, 0.0], "resolvable_rate": [0.0, 0.0], "unresolvable_rate": [0.0, 1.0]}
    corpus = {"accuracy": 0.5, "valid_rate": 0.5, "resolvable_rate": 0.0, "unresolvable_rate": 0.5, "arg_f1": 0.8}
    _, columns = item_columns(records, corpus)  # arg_f1 is micro-averaged: its mean is not the corpus value
    assert sorted(columns) == ["accuracy", "resolvable_rate", "unresolvable_rate", "valid_rate"]


def test_an_unknown_reference_is_a_one_line_error(tmp_path: Path) -> None:
    from labscale.errors import BadInputError

    path = small_study(tmp_path, settings=SETTINGS, models=MODELS)
    path.write_text(path.read_text() + "report: {reference: {model: gpt-5, setting: zero-shot}}\n")
    message = r"report.reference.model: 'gpt-5' is not in the study — fix: use one of tiny, small"
    with pytest.raises(BadInputError, match=message):
        build_plan(load_study(path))


def test_report_opens_in_headless_chromium(study, tmp_path: Path) -> None:
    """The demo-like report in a real browser: the DOM has the tables and the plots; the screenshot
    is kept in the store next to the run (reports/<key>/screenshot.png)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    require_binaries([] if browser else ["chromium"], "apt-get install chromium (make system-deps does)")
    spec, store, _ = study
    html = fetched(spec, store, tmp_path / "agg") / "report.html"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    page = Page()
    page.feed(dom)
    assert page.table_with("rougeL") and page.table_with("competitive")
    assert [(f["task"], f["svg"]) for f in page.figures] == [("notes", 1), ("claims", 1)]
    png = tmp_path / "screenshot.png"
    subprocess.run([browser, *flags, f"--screenshot={png}", "--window-size=1280,2400", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    store.backend.put_file(f"reports/{spec.key}/screenshot.png", png)
    assert store.backend.exists(f"reports/{spec.key}/screenshot.png")
