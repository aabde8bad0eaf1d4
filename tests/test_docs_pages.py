"""The docs run as written: the README's tour and every recipe, block by block, from an empty folder.

A page's fenced blocks are tagged in their info string (GitHub shows only the language):

- ```` ```python test ```` / ```` ```bash test ````: run, in page order, in one fresh folder per page;
- ```` ```python file=NAME ```` (any language): written to NAME in that folder for later blocks to use.

Untagged blocks are illustrations (a server you may not have, a long benchmark) and are not run.
Python runs with this interpreter, bash with its `bin/` first on PATH, so `recoworld` is the
installed console script, as for a user of a fresh checkout. A page that needs an optional
dependency names it in a `<!-- requires: module -->` comment; it is skipped without it locally and
fails without it under CI (`conftest.require`). A page whose commands talk to an LLM server names an
environment variable in a `<!-- stand-in server: VAR -->` comment; VAR then holds the URL of a loopback
OpenAI-compatible stand-in (`tests/fault_server.py`), since CI has no model server. Every relative
link of README.md and docs/ must lead to a file, and to a heading when it names one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import require
from fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[1]
RUN_PAGES = [ROOT / "README.md", ROOT / "docs" / "tutorial.md", *sorted((ROOT / "docs" / "recipes").glob("*.md"))]
ALL_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\S+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
#: A block may take this long; the slowest (the RLlib recipe's training) takes about a minute on 2 cores.
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    tags: tuple[str, ...]
    code: str

    @property
    def file(self) -> str | None:
        return next((t.split("=", 1)[1] for t in self.tags if t.startswith("file=")), None)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [Block(page, text[: m.start()].count("\n") + 1, m.group(1), tuple(m.group(2).split()), m.group(3))
            for m in FENCE.finditer(text)]


def requirements(page: Path) -> list[str]:
    return re.findall(r"<!-- requires: ([\w.]+) -->", page.read_text())


def stand_in_server(page: Path) -> str | None:
    found = re.findall(r"<!-- stand-in server: (\w+) -->", page.read_text())
    return found[0] if found else None


def run_block(block: Block, folder: Path, index: int, extra_env: dict[str, str]) -> None:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg", **extra_env,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if block.language == "python":
        script = folder / f"_block_{index}.py"
        script.write_text(block.code)
        command = [sys.executable, str(script)]
    elif block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        raise AssertionError(f"{block.where}: only python and bash blocks can be run, not {block.language!r}")
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, (f"{block.where}: the block exited with {done.returncode}\n{block.code}\n"
                                  f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_pages_blocks_run_in_a_fresh_folder(page: Path, tmp_path: Path) -> None:
    for module in requirements(page):
        require(module)
    runnable = [b for b in blocks(page) if "test" in b.tags or b.file]
    assert any("test" in b.tags for b in runnable), f"{page.relative_to(ROOT)} has no block tagged `test`"
    variable = stand_in_server(page)
    with FaultServer() as server:
        extra_env = {variable: server.url} if variable else {}
        for index, block in enumerate(runnable):
            if block.file:
                (tmp_path / block.file).write_text(block.code)
            if "test" in block.tags:
                run_block(block, tmp_path, index, extra_env)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_every_relative_link_leads_to_a_file_and_heading() -> None:
    broken = []
    for page in ALL_PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked offline
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_the_front_page_is_short_and_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150, "README.md is the front page: keep it under 150 lines, move text to docs/"
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", readme))
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")}
    assert pages - linked == set(), f"docs pages the front page does not link: {sorted(pages - linked)}"
