"""The docs cite only what the repository holds.

- Every relative Markdown link in README.md and docs/**/*.md reaches a file in the repository,
  and a `file.md#anchor` link a heading of that file (GitHub's anchors).
- Every repo path the docs write in backticks (`node/...`, `sim/...`, `medbft/...`, `tests/...`,
  `bench/...`, `scenarios/...`, `docs/...`, ending in .py/.md/.yaml or naming a folder) exists,
  and `docs/x.md#anchor` names a heading of docs/x.md.
- Every dotted module name in backticks (`node.ledger.encode_tx`) starts with a module.
- The same path check covers the code (docstrings and comments cite docs/design.md#...) and
  the scenario files, whose descriptions end up in every report.html.
- Every name of a Markdown file that any of these write (`docs/ledger.md`, `results.md`, but
  also a bare `notes.md`) is a file of the repository, next to the writer or from the root.

Each checker is a plain function over (file, text), so the tests at the bottom feed it broken
documents and watch it object."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

#: Paths the docs write as examples of outputs or of other namespaces, not as files of the
#: repository. Keep this short: anything else a doc names must exist.
NOT_REPO_PATHS = {
    "medbft/<network_id>": "an MQTT topic prefix (docs/real-network.md), not a path",
    "medbft/<network_id>/inbox/<id>": "an MQTT topic (docs/real-network.md), not a path",
    "medbft/<network_id>/all/<other>": "an MQTT fan-out topic (docs/real-network.md), "
                                       "not a path",
}

#: Top-level folders whose paths a doc may name.
_TOP = ("node", "sim", "medbft", "tests", "bench", "scenarios", "docs")
_PATH = re.compile(
    r"(?<![\w./<>-])(?:" + "|".join(_TOP) + r")/(?:[\w./*-]|<[\w-]+>)*(?:#[\w-]+)?"
)
_MD_NAME = re.compile(r"(?<![\w./:-])[\w./-]*[\w-]\.md(?![\w-])")
_MODULE = re.compile(r"(?<![\w./])(?:node|sim|medbft)(?:\.[A-Za-z_]\w*)+")
_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def split_fences(text: str) -> tuple[str, str]:
    """(prose, code): the text outside fenced code blocks and inside them, line for line."""
    prose: list[str] = []
    code: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            prose.append("")
            continue
        if fence is not None and stripped.startswith(fence):
            fence = None
            prose.append("")
            continue
        (code if fence is not None else prose).append(line)
    return "\n".join(prose), "\n".join(code)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, punctuation dropped
    (letters, digits, marks, `_` and `-` stay), spaces become hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    kept = []
    for ch in text.lower():
        cat = unicodedata.category(ch)
        if ch in " -_" or cat[0] in "LM" or cat in ("Nd", "Nl"):
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a Markdown file offers: heading slugs (repeats get -1, -2, ...) and
    explicit <a name|id="...">."""
    prose, _ = split_fences(text)
    found: set[str] = set(_HTML_ANCHOR.findall(prose))
    seen: dict[str, int] = {}
    for line in prose.splitlines():
        m = _HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        k = seen.get(base, 0)
        seen[base] = k + 1
        found.add(base if k == 0 else f"{base}-{k}")
    return found


def _without_code_spans(prose: str) -> str:
    return _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), prose)


def link_findings(doc: Path, text: str, root: Path = ROOT) -> Iterator[str]:
    """Relative links (and images) whose file, or whose heading anchor, does not exist."""
    prose, _ = split_fences(text)
    for target in _LINK.findall(_without_code_spans(prose)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        if not path_part:  # #anchor: a heading of this file
            if anchor not in anchors(text):
                yield f"{doc.name}: link to {target}: no heading #{anchor} in {doc.name}"
            continue
        dest = (doc.parent / path_part).resolve()
        if not dest.is_relative_to(root.resolve()) or not dest.exists():
            yield f"{doc.name}: link to {target}: no such file"
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            yield f"{doc.name}: link to {target}: no heading #{anchor} in {dest.name}"


def code_spans(text: str) -> Iterator[str]:
    """Inline code in the prose, and every line of the fenced code blocks."""
    prose, code = split_fences(text)
    for m in _CODE_SPAN.finditer(prose):
        yield m.group(2)
    yield from code.splitlines()


def _exists(path: str, root: Path) -> bool:
    """A path, a folder, or a glob / <placeholder> pattern that matches something."""
    pattern = re.sub(r"<[^>]*>", "*", path.rstrip("/"))
    if "*" in pattern:
        return any(root.glob(pattern))
    return (root / pattern).exists()


def _path_problems(spans: Iterator[str], root: Path) -> Iterator[str]:
    for span in spans:
        for raw in _PATH.findall(span):
            path, _, anchor = raw.partition("#")
            path = path.rstrip(".,;:")
            looks_like_file = path.endswith((".py", ".md", ".yaml", ".yml"))
            if not (looks_like_file or path.endswith("/") or "." not in path.rsplit("/", 1)[-1]):
                continue
            if path in NOT_REPO_PATHS:
                continue
            if not _exists(path, root):
                yield f"`{path}` does not exist"
            elif anchor and path.endswith(".md") and anchor not in anchors(
                    (root / path).read_text()):
                yield f"`{path}#{anchor}`: no such heading"


def path_findings(doc: Path, text: str, root: Path = ROOT) -> Iterator[str]:
    """Repo paths in backticks (node/..., sim/..., medbft/..., tests/..., bench/...,
    scenarios/..., docs/...) ending in .py/.md/.yaml or naming a folder, that do not exist,
    and `docs/x.md#anchor` whose heading does not exist."""
    for problem in _path_problems(code_spans(text), root):
        yield f"{doc.name}: {problem}"


def cited_path_findings(source: Path, text: str, root: Path = ROOT) -> Iterator[str]:
    """The same for a code or scenario file, over all of its text: there paths are written
    plainly (`node/ledger/rules.py`, `docs/ledger.md#invariants`)."""
    for problem in _path_problems(iter(text.splitlines()), root):
        yield f"{source.relative_to(root).as_posix()}: {problem}"


def md_name_findings(source: Path, text: str, root: Path = ROOT) -> Iterator[str]:
    """Names of Markdown files, anywhere in the text, that are not files of the repository
    (read from the writer's folder, or from the root)."""
    for name in _MD_NAME.findall(text):
        if any((base / name).resolve().is_relative_to(root.resolve())
               and (base / name).is_file() for base in (source.parent, root)):
            continue
        yield f"{source.relative_to(root).as_posix()}: {name} is not a file of the repository"


def source_files(root: Path = ROOT) -> list[Path]:
    """Code, benchmarks and scenarios. This file is left out: its tests write broken paths."""
    found = [p for top in ("node", "sim", "medbft", "tests", "bench")
             for p in sorted((root / top).rglob("*.py"))]
    found += sorted((root / "scenarios").rglob("*.yaml")) + sorted((root / "bench").glob("*.yaml"))
    return [p for p in found if p.resolve() != Path(__file__).resolve()]


def module_findings(doc: Path, text: str, root: Path = ROOT) -> Iterator[str]:
    """Dotted names in backticks (`node.ledger.encode_tx`, `medbft.apps.X`) whose package and
    first module, or package and first subpackage, are not in the repository."""
    for span in code_spans(text):
        for name in _MODULE.findall(span):
            parts = name.split(".")
            top, first = parts[0], parts[1]
            if (root / top / f"{first}.py").exists() or (root / top / first).is_dir():
                continue
            if (root / top / "__init__.py").exists() and not first[0].islower():
                continue  # a name the package itself exports, e.g. `node.Replica`
            yield f"{doc.name}: `{name}`: no module {top}/{first}.py or package {top}/{first}/"


def all_findings(check) -> list[str]:
    return [f for doc in doc_files() for f in check(doc, doc.read_text(), ROOT)]


# -- the repository's docs ---------------------------------------------------------------------


def test_the_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in doc_files()}
    assert {"README.md", "docs/design.md", "docs/ledger.md"} <= names


def test_relative_links_reach_files_and_headings() -> None:
    assert all_findings(link_findings) == []


def test_paths_in_backticks_exist() -> None:
    assert all_findings(path_findings) == []


def test_dotted_module_names_are_modules() -> None:
    assert all_findings(module_findings) == []


def test_paths_cited_by_code_and_scenarios_exist() -> None:
    files = source_files()
    assert ROOT / "sim" / "cpu.py" in files and ROOT / "scenarios" / "baseline.yaml" in files
    assert [f for p in files for f in cited_path_findings(p, p.read_text())] == []


def test_every_markdown_file_named_is_in_the_repository() -> None:
    files = doc_files() + source_files()
    assert [f for p in files for f in md_name_findings(p, p.read_text())] == []


def test_the_allowlist_holds_only_what_is_still_written() -> None:
    """An entry nobody writes any more goes, so the list stays short."""
    written = {raw.rstrip(".,;:") for doc in doc_files() for span in code_spans(doc.read_text())
               for raw in _PATH.findall(span)}
    assert set(NOT_REPO_PATHS) <= written


# -- the checkers can fail ---------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "__init__.py").write_text("")
    (tmp_path / "node" / "client.py").write_text("")
    (tmp_path / "docs" / "design.md").write_text(
        "# Design\n\n## Timers and `backoff`\n\n## Timers and `backoff`\n")
    return tmp_path


def test_a_link_to_a_missing_file_is_found(repo: Path) -> None:
    doc = repo / "README.md"
    text = "See [design](docs/design.md), [gone](docs/gone.md) and [web](https://example.org/x.md).\n"
    assert list(link_findings(doc, text, repo)) == ["README.md: link to docs/gone.md: no such file"]


def test_a_link_out_of_the_repository_is_found(repo: Path) -> None:
    doc = repo / "docs" / "design.md"
    (repo.parent / "outside.md").write_text("# Outside\n")
    assert list(link_findings(doc, "[x](../../outside.md)\n", repo)) == [
        "design.md: link to ../../outside.md: no such file"]


def test_a_link_to_a_missing_heading_is_found(repo: Path) -> None:
    doc = repo / "README.md"
    text = ("[ok](docs/design.md#timers-and-backoff) [second](docs/design.md#timers-and-backoff-1) "
            "[bad](docs/design.md#timers) [self](#nowhere)\n")
    assert list(link_findings(doc, text, repo)) == [
        "README.md: link to docs/design.md#timers: no heading #timers in design.md",
        "README.md: link to #nowhere: no heading #nowhere in README.md",
    ]


def test_links_in_code_are_not_links(repo: Path) -> None:
    doc = repo / "README.md"
    text = "`[x](gone.md)`\n\n```md\n[y](gone.md)\n```\n"
    assert list(link_findings(doc, text, repo)) == []


def test_a_missing_path_in_backticks_is_found(repo: Path) -> None:
    doc = repo / "README.md"
    text = ("`node/client.py`, `node/`, `python node/client.py --x`, `node/replica.py`, "
            "`sim/plots/`, `docs/*.md`, `node/<name>.py`, `node/gone.yaml`.\n"
            "```sh\npython bench/gone.py\n```\n")
    assert list(path_findings(doc, text, repo)) == [
        "README.md: `node/replica.py` does not exist",
        "README.md: `sim/plots/` does not exist",
        "README.md: `node/gone.yaml` does not exist",
        "README.md: `bench/gone.py` does not exist",
    ]


def test_a_missing_heading_in_a_cited_path_is_found(repo: Path) -> None:
    doc = repo / "README.md"
    text = "`docs/design.md#timers-and-backoff` and `docs/design.md#expected-numbers`\n"
    assert list(path_findings(doc, text, repo)) == [
        "README.md: `docs/design.md#expected-numbers`: no such heading"]


def test_code_and_scenarios_are_checked_in_plain_text(repo: Path) -> None:
    (repo / "sim").mkdir()
    code = repo / "sim" / "cpu.py"
    text = ('"""Costs (the formulas in docs/design.md#per-node-load; see node/client.py).\n'
            'Rules: docs/design.md#timers-and-backoff, sim/plots/, ../outside/notes.md."""\n'
            'REPORT = "<p>Definitions: docs/design.md.</p>"\n')
    assert list(cited_path_findings(code, text, repo)) == [
        "sim/cpu.py: `docs/design.md#per-node-load`: no such heading",
        "sim/cpu.py: `sim/plots/` does not exist",
    ]
    code.write_text(text)
    assert code in source_files(repo)


def test_markdown_files_outside_the_repository_are_found(repo: Path) -> None:
    (repo.parent / "notes.md").write_text("# Outside\n")
    doc = repo / "docs" / "design.md"
    text = ("Counts as in notes.md 4.1 and ledger-notes.md's B.4; see `../outside/ref.md`,\n"
            "OVERVIEW.md, ../notes.md, but design.md, docs/design.md, ./design.md and\n"
            "https://example.org/README.md are fine.\n")
    assert list(md_name_findings(doc, text, repo)) == [
        f"docs/design.md: {name} is not a file of the repository"
        for name in ("notes.md", "ledger-notes.md", "../outside/ref.md", "OVERVIEW.md",
                     "../notes.md")]


def test_a_stale_dotted_module_is_found(repo: Path) -> None:
    doc = repo / "README.md"
    text = "`node.client.Client`, `node.Replica`, `sim.scenario.load`, `node.gone`\n"
    assert list(module_findings(doc, text, repo)) == [
        "README.md: `sim.scenario.load`: no module sim/scenario.py or package sim/scenario/",
        "README.md: `node.gone`: no module node/gone.py or package node/gone/",
    ]


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Simulator speed: `python bench/sim_speed.py [--quick] [--profile]`",
     "simulator-speed-python-benchsim_speedpy---quick---profile"),
    ("Swarm testing: `medbft fuzz`", "swarm-testing-medbft-fuzz"),
    ("Queries (`node/ledger/queries.py`, also `medbft ledger`)",
     "queries-nodeledgerqueriespy-also-medbft-ledger"),
    ("Step by step: `medbft sequence`", "step-by-step-medbft-sequence"),
    ("Per-node load (n², **b**)", "per-node-load-n-b"),
])
def test_slugs_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
