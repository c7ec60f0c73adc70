"""README.md and docs/*.md say only what the code does.

What is checked, and by which rule:

1. **Study YAML.** Every fenced ```yaml block is study YAML (a whole study or a piece of one),
   unless the line just before its fence is `<!-- not a study -->` (for other YAML, e.g. a
   Kubernetes manifest). It must parse to a mapping, and then:

   - a block with both `name:` and `tasks:` at its top level is a **whole study**. It must pass
     `Study.model_validate` (the schema) and then `load_study` as if it were saved in `studies/`
     (so `data/…` and `benchmarks/` paths resolve as they do for the shipped studies): registered
     task names, ids that cross-reference (`train_task`, `report.reference`, `teacher_setting`,
     the judge), data files and their columns, splits;
   - any other block is a **fragment**: every top-level key must be a field of `Study`, and its
     value must validate against that field's type (`settings:` as a list of `SettingConfig`,
     `scoring:` as `ScoreConfig`, `models:` as a list of `ModelConfig`, …).

   The schema forbids unknown fields, so a misspelt field (`shotz: 2`) fails either way.

2. **Commands.** In fenced blocks without a language or marked bash/sh/shell/console/text, each
   line (continuations joined, a leading `$ ` dropped, `# comments` cut, split at `&&`, `||`, `;`,
   `|`) that runs `labscale`, `make` or `python -m`; and every inline code span that starts with
   `labscale `, `make ` or `python -m `:

   - `labscale SUB …`: SUB is a subcommand of `labscale.cli.build_parser()`, and every `--option`
     shown is one of that subcommand's options (placeholders such as STUDY and `[…]` are fine);
   - `make TARGET`: TARGET is a target of the Makefile;
   - `python -m MODULE`: MODULE can be imported (placeholders such as `<stage>` are skipped).

   The README's own code blocks run exactly two set-up commands, `make demo` and `make test`.

3. **Shape and links.** README.md has at most 250 lines; every docs page the README's map must
   list exists and is linked from it; every relative Markdown link in README.md and docs/*.md
   resolves to an existing file, and a `#anchor` to a heading of the target page (GitHub's
   slugs); every back-ticked path under a top-level folder of the repository (`studies/…`,
   `shared/…`, `tests/…`) exists.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from labscale.config import load_study
from labscale.config.study import Study

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
# The pages issue 16 asks for (study files and settings; tasks and metrics; Kubernetes and images;
# storage and metrics; cost/carbon/statistics and the report; judge/DPO, distillation, privacy;
# performance) and the architecture page the old README's "How it works" moved to.
REQUIRED_PAGES = ["studies.md", "tasks-and-metrics.md", "kubernetes.md", "storage-and-metrics.md",
                  "cost-and-report.md", "judge-and-dpo.md", "distillation.md", "privacy.md",
                  "performance.md", "architecture.md"]
NOT_A_STUDY = "<!-- not a study -->"
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console", "text"}
TOP_LEVEL_DIRS = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    marker: str  # the non-blank line before the fence

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _split(page: Path) -> tuple[list[Block], list[tuple[int, str]]]:
    """The fenced blocks of a page, and its other lines (numbered) — prose, headings, tables."""
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    fence: tuple[int, str, str] | None = None
    body: list[str] = []
    previous = ""
    for number, line in enumerate(lines, 1):
        if fence is None and line.startswith("```"):
            fence, body = (number, line[3:].strip().lower(), previous), []
        elif fence is not None and line.startswith("```"):
            blocks.append(Block(page, fence[0], fence[1], "\n".join(body), fence[2]))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append((number, line))
        if line.strip():
            previous = line.strip()
    assert fence is None, f"{page.relative_to(ROOT)}:{fence[0]}: unclosed code fence"
    return blocks, prose


BLOCKS = [block for page in PAGES for block in _split(page)[0]]
YAML_BLOCKS = [b for b in BLOCKS if b.language in ("yaml", "yml") and b.marker != NOT_A_STUDY]


def _is_study(data: dict[str, Any]) -> bool:
    return "name" in data and "tasks" in data


def _validate_yaml(text: str, tmp_path: Path) -> str:
    """Validate one block by the rules in the module docstring; return what it was checked as."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict), "a study YAML block must be a mapping (mark other YAML `<!-- not a study -->`)"
    if _is_study(data):
        Study.model_validate(data)
        tmp_path.mkdir(parents=True, exist_ok=True)
        for entry in (ROOT / "studies").iterdir():  # data/, benchmarks/ resolve as for studies/*.yaml
            (tmp_path / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
        path = tmp_path / "docs-block-study.yaml"
        path.write_text(text, encoding="utf-8")
        load_study(path)
        return "study"
    unknown = sorted(set(data) - set(Study.model_fields))
    assert not unknown, f"top-level key(s) {unknown} are not study fields"
    for key, value in data.items():
        TypeAdapter(Study.model_fields[key].annotation).validate_python(value)
    return "fragment: " + ", ".join(data)


def test_docs_show_study_yaml() -> None:
    assert sum(_is_study(yaml.safe_load(b.text) or {}) for b in YAML_BLOCKS if b.page == README) >= 1, \
        "the README shows one whole study file"
    assert len(YAML_BLOCKS) >= 10


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_yaml_block_validates(block: Block, tmp_path: Path) -> None:
    try:
        _validate_yaml(block.text, tmp_path)
    except Exception as exc:  # one readable line per failing block
        pytest.fail(f"{block.where}: the YAML block shown does not validate: {exc}")


def test_a_misspelt_field_fails(tmp_path: Path) -> None:
    """The rule catches what it is for: a planted `shotz: 2` in a whole study and in a fragment."""
    study = next(b for b in YAML_BLOCKS if b.page == README and _is_study(yaml.safe_load(b.text)))
    bad_study = study.text.replace("shots: 3", "shotz: 2")
    assert bad_study != study.text
    with pytest.raises(Exception, match="shotz"):
        _validate_yaml(bad_study, tmp_path / "study")
    with pytest.raises(Exception, match="shotz"):
        _validate_yaml("settings:\n  - {id: few, shotz: 2}\n", tmp_path)
    with pytest.raises(AssertionError, match="shotz"):
        _validate_yaml("shotz: 2\n", tmp_path)


# --- commands ---------------------------------------------------------------------------------


def _subcommands() -> dict[str, set[str]]:
    """`labscale` subcommand → its option strings, from the CLI's own parser."""
    from labscale.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in sub._actions for o in a.option_strings} for name, sub in action.choices.items()}


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.MULTILINE)}


def _commands(text: str) -> list[list[str]]:
    """Shell lines → simple commands (token lists), split at && || ; | and without comments."""
    out: list[list[str]] = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        try:
            tokens = list(lexer)
        except ValueError:  # unbalanced quotes in a heredoc body: not a command line
            continue
        command: list[str] = []
        for token in [*tokens, ";"]:
            if token in (";", "&&", "||", "|", "&"):
                if command:
                    out.append(command)
                command = []
            else:
                command.append(token)
    return out


@dataclass(frozen=True)
class Shown:
    where: str
    tokens: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.tokens)}"


def _shown_commands() -> list[Shown]:
    shown: list[Shown] = []
    for page in PAGES:
        blocks, prose = _split(page)
        for block in blocks:
            if block.language in SHELL_LANGUAGES:
                for tokens in _commands(block.text):
                    if tokens[0] in ("labscale", "make") or tokens[:2] == ["python", "-m"]:
                        shown.append(Shown(block.where, tuple(tokens)))
        for number, line in prose:
            for span in re.findall(r"`((?:labscale|make|python -m) [^`]+)`", line):
                for tokens in _commands(span):
                    shown.append(Shown(f"{page.relative_to(ROOT)}:{number}", tuple(tokens)))
    return shown


SHOWN = _shown_commands()


def test_commands_are_shown() -> None:
    assert {s.tokens[1] for s in SHOWN if s.tokens[0] == "labscale"} >= {"validate", "plan", "run", "results",
                                                                          "render", "submit", "stage"}


@pytest.mark.parametrize("shown", SHOWN, ids=str)
def test_shown_command_exists(shown: Shown) -> None:
    tokens = [t.strip("[]") for t in shown.tokens]
    if tokens[0] == "labscale":
        subcommands = _subcommands()
        assert tokens[1] in subcommands, f"{shown.where}: `labscale {tokens[1]}` is not a labscale command " \
                                         f"(there are: {', '.join(subcommands)})"
        for option in (t.split("=")[0] for t in tokens[2:] if t.startswith("--")):
            assert option in subcommands[tokens[1]], f"{shown.where}: `labscale {tokens[1]}` has no {option}"
    elif tokens[0] == "make":
        for target in (t for t in tokens[1:] if "=" not in t and not t.startswith("-")):
            assert target in _make_targets(), f"{shown.where}: the Makefile has no target {target!r}"
    else:
        module = tokens[2]
        if "<" not in module:
            assert importlib.util.find_spec(module) is not None, f"{shown.where}: no module {module}"


def test_readme_has_exactly_the_two_setup_commands() -> None:
    blocks, _ = _split(README)
    commands = {" ".join(tokens) for b in blocks if b.language in SHELL_LANGUAGES
                for tokens in _commands(b.text) if tokens[0] != "labscale"}
    assert commands == {"make demo", "make test"}
    assert not re.search(r"pip install|apt-get install|python3? -m venv", README.read_text(encoding="utf-8"))


# --- shape and links --------------------------------------------------------------------------


def test_readme_is_a_front_door() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_required_pages_exist_and_readme_maps_every_page() -> None:
    missing = [p for p in REQUIRED_PAGES if not (DOCS / p).is_file()]
    assert not missing, f"docs/ lacks {missing}"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)", README.read_text(encoding="utf-8")))
    unmapped = sorted(p.name for p in DOCS.glob("*.md") if p.name not in linked)
    assert not unmapped, f"README's map of docs/ does not link {unmapped}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation (backticks, '&', '—', ...) dropped, spaces → '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    anchors: set[str] = set()
    counts: dict[str, int] = {}
    for _, line in _split(page)[1]:
        if m := re.match(r"#{1,6} (.+)", line):
            slug = _slug(m.group(1))
            anchors.add(f"{slug}-{counts[slug]}" if slug in counts else slug)
            counts[slug] = counts.get(slug, 0) + 1
    return anchors


def test_links_resolve() -> None:
    broken = []
    for page in PAGES:
        for number, line in _split(page)[1]:
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                path, _, anchor = target.partition("#")
                file = (page.parent / path).resolve() if path else page
                where = f"{page.relative_to(ROOT)}:{number}: {target}"
                if not file.exists():
                    broken.append(f"{where} (no such file)")
                elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                    broken.append(f"{where} (no heading #{anchor} in {file.relative_to(ROOT)})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_backticked_repository_paths_exist() -> None:
    pattern = re.compile(r"`((?:%s)/[\w./-]*)`" % "|".join(map(re.escape, TOP_LEVEL_DIRS)))
    missing = []
    for page in PAGES:
        for number, line in _split(page)[1]:
            for path in pattern.findall(line):
                if not (ROOT / path).exists():
                    missing.append(f"{page.relative_to(ROOT)}:{number}: {path}")
    assert not missing, "paths named in the docs that do not exist:\n" + "\n".join(missing)
