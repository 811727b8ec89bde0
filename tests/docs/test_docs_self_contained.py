"""The docs stand on their own: what they name exists in this repository.

Three checks over every Markdown file of the repository (tracked, or new and not ignored:
``git ls-files --cached --others --exclude-standard``), each with a test of its checker on a bad sample,
so a checker that stopped finding anything would fail too:

- every ``make <target>`` written as code (a code span or a code block) in a Markdown file (README.md,
  docs/*.md, deploy/README.md and the others; vendored files aside) is a rule of the Makefile: a recipe or
  prerequisites, from ``make -pRrq``'s database (a name only in ``.PHONY`` does nothing: it counts as missing);
- every relative link resolves to a file or folder of the repository, and a ``#fragment`` into a Markdown
  file names one of its headings (GitHub's anchors);
- no file refers to the design notes kept outside the repository (see ``FORBIDDEN``), and a section named in a
  file that is not Markdown (a code comment's ``docs/architecture.md#scaling-out``) is a heading of that page.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parents[2]
# References to files that live next to the repository, not in it (written in two pieces, so this file is
# not a reference itself). What they held is in docs/architecture.md.
FORBIDDEN = ("DESIGN" + ".md", "../" + "shared", "/work/" + "shared")
NEVER_SCANNED = (".venv/", ".run/")
# Third-party files copied in as they are: their `make` commands are not ours.
VENDORED = "/vendor/"

_MARKDOWN = MarkdownIt("commonmark", {"html": True}).enable("table")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
_HTML_ANCHOR = re.compile(r"""<a\s[^>]*?(?:name|id)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_MAKE = re.compile(r"(?:^|(?<=[\s;&|(`$]))make(?=\s)")
# docs/architecture.md#scaling-out in a comment; not //host/x.md#y or a.b/x.md#y inside a web address.
_SECTION_REFERENCE = re.compile(r"(?<![\w/.:-])((?:[\w.-]+/)*[\w.-]+\.md)#([\w-]+)")
_SPECIAL_TARGET = re.compile(r"^\.[A-Z_]+$")  # .PHONY, .DEFAULT, .SUFFIXES, ...
_COMMENT = re.compile(r"(?:^|\s)#.*$")
_SHELL_SEPARATORS = {";", "&&", "||", "|", "&", ")"}
_OPTIONS_WITH_VALUE = {"-C", "-f", "-I", "-o", "-W", "--directory", "--file", "--makefile"}


# --- the repository's files ---------------------------------------------------------------------------------------


def repository_files(root: Path = ROOT) -> list[str]:
    """Files a clone has, plus new ones not ignored yet (paths relative to ``root``, forward slashes)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return sorted({p for p in listed.split("\0") if p and not p.startswith(NEVER_SCANNED) and (root / p).is_file()})


def folders_of(files: Iterable[str]) -> set[str]:
    """Every folder that holds one of ``files`` ("" is the root)."""
    found = {""}
    for path in files:
        parts = path.split("/")[:-1]
        found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return found


# --- (a) make targets ---------------------------------------------------------------------------------------------


def _make_database(makefile: Path) -> str:
    """The "# Files" part of make's database of ``makefile``: each target with its prerequisites and recipe."""
    database = subprocess.run(
        ["make", "-pRrq", "-f", str(makefile), ":"],
        cwd=makefile.parent,
        capture_output=True,
        text=True,
        check=False,  # -q exits 1 or 2 by design; the database is printed either way
    ).stdout
    return database.partition("\n# Files\n")[2].partition("\n# files hash-table stats")[0]


def phony_targets(makefile: Path) -> set[str]:
    """The names ``makefile`` declares ``.PHONY``: the commands it offers, rule or not."""
    found = re.search(r"^\.PHONY:(.*)$", _make_database(makefile), re.MULTILINE)
    return set(found.group(1).split()) if found else set()


def makefile_rules(makefile: Path) -> set[str]:
    """The targets ``makefile`` has a rule for: a recipe, or prerequisites to make.

    Read from make's own database (``make -pRrq``), so includes, variables and pattern expansion are make's
    business, not a regex's. A name declared only in ``.PHONY`` (or an empty ``name:``) has neither: ``make name``
    would say "Nothing to be done" and do nothing, so it is not a rule here.
    """
    rules: set[str] = set()
    for block in _make_database(makefile).split("\n\n"):
        lines = [line for line in block.splitlines() if line]
        if not lines or lines[0] == "# Not a target:":
            continue
        head = re.match(r"^([^#\s][^:]*?)::?(?!=)(.*)$", lines[0])
        if head is None:
            continue
        prerequisites = head.group(2).replace("|", " ").split()
        recipe = any(line.startswith("\t") for line in lines[1:])
        if recipe or prerequisites:
            rules.update(head.group(1).split())
    return {rule for rule in rules if not _SPECIAL_TARGET.match(rule)}


def _code_texts(tokens: Iterable[Token]) -> Iterator[str]:
    """The text of every code span and code block."""
    for token in tokens:
        if token.type in ("fence", "code_block"):
            yield token.content
        elif token.type == "inline" and token.children:
            yield from (child.content for child in token.children if child.type == "code_inline")


def make_targets_named(markdown: str) -> set[str]:
    """The targets of every ``make ...`` command written as code (prose such as "make it" is not a command)."""
    targets: set[str] = set()
    for code in _code_texts(_MARKDOWN.parse(markdown)):
        for line in code.splitlines():
            line = _COMMENT.sub("", line)
            for found in _MAKE.finditer(line):
                # A backtick ends it: a code block may quote a command as Markdown does (the README's layout).
                words = iter(line[found.end() :].split("`")[0].split())
                for word in words:
                    if word in _SHELL_SEPARATORS:
                        break
                    if word in _OPTIONS_WITH_VALUE:
                        next(words, None)
                    elif not word.startswith("-") and "=" not in word and word.rstrip(";"):
                        targets.add(word.rstrip(";"))
                    if word.endswith(";"):
                        break
    return targets


def missing_make_targets(documents: dict[str, str], rules: set[str]) -> list[str]:
    """``document: make target`` for every target a document names that has no rule."""
    return [
        f"{name}: `make {target}` has no rule in the Makefile"
        for name, text in sorted(documents.items())
        for target in sorted(make_targets_named(text) - rules)
    ]


# --- (b) links and anchors ----------------------------------------------------------------------------------------


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text: lower case, punctuation and symbols dropped, spaces to hyphens."""
    kept = (
        ch
        for ch in heading.strip().lower()
        if ch in " -_" or unicodedata.category(ch)[0] in "LMN"  # letters, marks, numbers
    )
    return "".join(kept).replace(" ", "-")


def anchors_of(markdown: str) -> set[str]:
    """Every ``#fragment`` that lands somewhere in the document: its headings (a repeated one gets ``-1``, ``-2``,
    as on GitHub) and explicit ``<a name=…>``/``id=…`` anchors."""
    tokens = _MARKDOWN.parse(markdown)
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = "".join(c.content for c in inline.children or () if c.type in ("text", "code_inline"))
        slug = github_slug(text)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    anchors.update(_HTML_ANCHOR.findall(markdown))
    return anchors


@dataclass(frozen=True)
class Link:
    line: int | None
    target: str


def links_of(markdown: str) -> list[Link]:
    """Every link and image target written in the document (reference-style ones resolved)."""
    found: list[Link] = []

    def walk(tokens: Iterable[Token], line: int | None) -> None:
        for token in tokens:
            if token.map:
                line = token.map[0] + 1
            if token.type in ("softbreak", "hardbreak") and line is not None:
                line += 1  # inline tokens have no line of their own: count the breaks of their paragraph
            elif token.type == "link_open":
                found.append(Link(line, str(token.attrGet("href") or "")))
            elif token.type == "image":
                found.append(Link(line, str(token.attrGet("src") or "")))
            if token.children:
                walk(token.children, line)

    walk(_MARKDOWN.parse(markdown), None)
    return found


def broken_links(root: Path, documents: Iterable[str], files: Iterable[str]) -> list[str]:
    """``document:line: target (why)`` for each relative link that does not land in the repository."""
    known_files = set(files)
    known_folders = folders_of(known_files)
    anchor_cache: dict[str, set[str]] = {}

    def anchors(path: str) -> set[str]:
        if path not in anchor_cache:
            anchor_cache[path] = anchors_of((root / path).read_text(encoding="utf-8"))
        return anchor_cache[path]

    problems: list[str] = []
    for document in documents:
        here = Path(document).parent
        for link in links_of((root / document).read_text(encoding="utf-8")):
            if not link.target or _SCHEME.match(link.target):
                continue  # a web address: not this test's business
            parts = urlsplit(link.target)
            path, fragment = unquote(parts.path), unquote(parts.fragment)
            where = f"{document}:{link.line}: {link.target}"
            if path:
                joined = Path(path.lstrip("/")) if path.startswith("/") else here / path
                resolved = _normalise(joined)
                if resolved is None:
                    problems.append(f"{where} (points outside the repository)")
                    continue
                if resolved not in known_files and resolved.rstrip("/") not in known_folders:
                    problems.append(f"{where} (no such file or folder in the repository)")
                    continue
            else:
                resolved = document
            if fragment and resolved.endswith(".md") and resolved in known_files and fragment not in anchors(resolved):
                problems.append(f"{where} (no heading with the anchor #{fragment} in {resolved})")
    return problems


def _normalise(path: Path) -> str | None:
    """``path`` with ``.`` and ``..`` folded, relative to the root; None when it climbs out of the repository."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


# --- (c) references to outside notes ------------------------------------------------------------------------------


def outside_references(name: str, text: str) -> list[str]:
    """``file:line: what`` for every line of ``text`` that refers to notes kept outside the repository."""
    return [
        f"{name}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if any(word.lower() in line.lower() for word in FORBIDDEN)
    ]


def dangling_section_references(
    name: str, text: str, known_files: set[str], anchors: Callable[[str], set[str]]
) -> list[str]:
    """``file:line: page#section`` for each ``<path>.md#<section>`` in ``text`` (a path from the repository's root)
    whose page or heading does not exist. A web address's ``….md#…`` is not such a reference."""
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for found in _SECTION_REFERENCE.finditer(line):
            page, section = found.group(1), found.group(2)
            if page not in known_files:
                problems.append(f"{name}:{number}: {page}#{section} (no such page)")
            elif section not in anchors(page):
                problems.append(f"{name}:{number}: {page}#{section} (no such heading)")
    return problems


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None  # binary: images, fonts
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# --- the repository -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("these checks list the repository's files with git: run them in a clone")
    return repository_files()


def test_every_make_command_in_the_docs_is_a_rule_of_the_makefile(files: list[str]) -> None:
    assert shutil.which("make"), "make is needed to read the Makefile's rules"
    documents = {
        path: (ROOT / path).read_text(encoding="utf-8")
        for path in files
        if path.endswith(".md") and VENDORED not in f"/{path}"
    }
    assert {"README.md", "deploy/README.md", "docs/architecture.md"} <= documents.keys()
    assert missing_make_targets(documents, makefile_rules(ROOT / "Makefile")) == []


def test_the_readme_names_every_command_of_the_makefile() -> None:
    makefile = ROOT / "Makefile"
    offered = phony_targets(makefile) & makefile_rules(makefile)
    assert {"run", "test", "unit", "up"} <= offered
    named = make_targets_named((ROOT / "README.md").read_text(encoding="utf-8"))
    assert sorted(offered - named) == [], "README.md's table of make targets misses these"


def test_every_relative_link_in_markdown_lands_on_a_file_and_heading(files: list[str]) -> None:
    documents = [path for path in files if path.endswith(".md")]
    assert "README.md" in documents
    assert broken_links(ROOT, documents, files) == []


def test_no_file_refers_to_notes_outside_the_repository(files: list[str]) -> None:
    problems: list[str] = []
    for path in files:
        text = _text(ROOT / path)
        if text is not None:
            problems += outside_references(path, text)
    assert problems == []


def test_sections_named_in_code_and_config_are_headings_of_their_page(files: list[str]) -> None:
    known = set(files)
    cache: dict[str, set[str]] = {}

    def anchors(page: str) -> set[str]:
        if page not in cache:
            cache[page] = anchors_of((ROOT / page).read_text(encoding="utf-8"))
        return cache[page]

    this_file = Path(__file__).resolve().relative_to(ROOT).as_posix()  # its bad samples are on purpose
    problems: list[str] = []
    for path in files:
        text = None if path.endswith(".md") or path == this_file else _text(ROOT / path)
        if text is not None:
            problems += dangling_section_references(path, text, known, anchors)
    assert problems == []


# --- the checkers find what they look for -------------------------------------------------------------------------


def test_a_target_only_declared_phony_is_not_a_rule(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        ".PHONY: run unit empty all\nSTAMP := .venv/.x\nrun: $(STAMP)\n\techo run\n$(STAMP):\n\ttouch $@\n"
        "empty:\nall: run\n",
        encoding="utf-8",
    )
    rules = makefile_rules(makefile)
    assert {"run", "all", ".venv/.x"} <= rules
    assert not rules & {"unit", "empty"}
    assert phony_targets(makefile) == {"run", "unit", "empty", "all"}
    readme = "Type `make unit`, or:\n\n```sh\nmake FUZZ=1 -k run all  # then make nothing\n```\n"
    assert missing_make_targets({"README.md": readme}, rules) == ["README.md: `make unit` has no rule in the Makefile"]


def test_make_commands_are_read_from_code_only() -> None:
    markdown = (
        "We make it easy; make sure of it.\n\n`make up` then `cd x && make -C y lint test; make bench`\n\n"
        "```sh\nmake run    # first use: make install\nPYTHON=python3.12 make install\ncmake ..\n"
        "libs/devstack/   `make run` supervisor, demo seed\n```\n"
        "    make indented\n"
    )
    assert make_targets_named(markdown) == {"up", "lint", "test", "bench", "run", "install", "indented"}


def test_github_anchors_follow_githubs_rules() -> None:
    markdown = (
        "# tweetshop runbook\n## 429 Too Many Requests and rate-limit metrics\n### `tweetshop`, the operator command\n"
        "## Ordering, partitions and delivery\n## Alerts\n## Alerts\nSetext heading — with a dash\n---\n"
        '<a name="kept-by-hand"></a>\n```\n# not a heading\n```\n'
    )
    assert anchors_of(markdown) == {
        "tweetshop-runbook",
        "429-too-many-requests-and-rate-limit-metrics",
        "tweetshop-the-operator-command",
        "ordering-partitions-and-delivery",
        "alerts",
        "alerts-1",
        "setext-heading--with-a-dash",
        "kept-by-hand",
    }


def test_broken_links_and_anchors_are_named(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n## Delivery guarantees\n", encoding="utf-8")
    (tmp_path / "Makefile").write_text("", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "[ok](docs/guide.md#delivery-guarantees) [folder](docs/) [top](#readme) [web](https://example.com/x.md)\n"
        "[code](Makefile#L3) [ref][r] ![img](docs/missing.png) [gone](docs/nothing.md) [bad](docs/guide.md#nope)\n"
        "[out](../elsewhere/notes.md) [self](#nowhere) `[not a link](missing.md)`\n\n"
        "# Readme\n\n[r]: ./docs/guide.md#guide\n",
        encoding="utf-8",
    )
    files = ["README.md", "Makefile", "docs/guide.md"]
    assert broken_links(tmp_path, ["README.md"], files) == [
        "README.md:2: docs/missing.png (no such file or folder in the repository)",
        "README.md:2: docs/nothing.md (no such file or folder in the repository)",
        "README.md:2: docs/guide.md#nope (no heading with the anchor #nope in docs/guide.md)",
        "README.md:3: ../elsewhere/notes.md (points outside the repository)",
        "README.md:3: #nowhere (no heading with the anchor #nowhere in README.md)",
    ]


def test_references_to_outside_notes_are_found() -> None:
    text = "fine\n# see shared/DESIGN" + ".md, Scaling out\nas design" + ".md says\nopen ../" + "shared/x\n"
    assert [problem.split(":")[1] for problem in outside_references("live.py", text)] == ["2", "3", "4"]
    assert outside_references("README.md", "docs/architecture.md#scaling-out\n") == []


def test_dangling_section_references_are_found() -> None:
    pages = {"docs/architecture.md": {"scaling-out", "delivery-guarantees"}}
    text = (
        "# its own consumer group (docs/architecture.md#scaling-out), fine\n"
        '    """rules: docs/architecture.md#delivery-rules."""\n'
        "# see docs/archtecture.md#scaling-out\n"
        "url: https://runbook.example/docs/runbook.md#servicedown and //x/y.md#z\n"
    )
    assert dangling_section_references("live.py", text, set(pages), pages.__getitem__) == [
        "live.py:2: docs/architecture.md#delivery-rules (no such heading)",
        "live.py:3: docs/archtecture.md#scaling-out (no such page)",
    ]
