"""Every snippet of the README and the docs runs as written.

The ``bash`` and ``python`` blocks of each page run in order, in one empty folder per page
(so a page can build on its own earlier snippets), with the environment's ``nudgekit`` on
``PATH``. A block that cannot run here says why in a comment right above it:
``<!-- not run: REASON -->``. A block that needs the real benchmark data under
``../shared/`` is marked ``<!-- needs: shared -->`` and skipped where it is absent.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
#: the pages whose snippets are run (each page in its own folder)
PAGES = ["README.md", "docs/stores.md", "docs/integrations.md"]

FENCE = re.compile(r"^```(\w+)\s*$")
MARK = re.compile(r"<!--\s*(not run|needs):\s*(.+?)\s*-->")


@dataclass
class Snippet:
    page: str
    line: int
    language: str
    code: str
    skip: str | None = None  # why it is not run
    needs: str | None = None


def snippets(page: str) -> list[Snippet]:
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        language = fence.group(1)
        if language not in ("bash", "python"):
            continue
        marks = [MARK.search(line) for line in lines[max(0, start - 3) : start]]
        skip = next((m.group(2) for m in marks if m and m.group(1) == "not run"), None)
        needs = next((m.group(2) for m in marks if m and m.group(1) == "needs"), None)
        found.append(Snippet(page, start + 1, language, "\n".join(body), skip, needs))
    return found


def run(snippet: Snippet, folder: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if snippet.language == "bash":
        cmd = ["bash", "-euo", "pipefail", "-c", snippet.code]
    else:
        cmd = [sys.executable, "-c", snippet.code]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("page", PAGES)
def test_every_snippet_of_the_page_runs(page, tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)  # ../shared, as from the project's root
    ran = 0
    for snippet in snippets(page):
        if snippet.skip is not None:
            continue
        if snippet.needs == "shared" and not SHARED.is_dir():
            continue
        result = run(snippet, folder)
        where = f"{page}:{snippet.line}"
        assert result.returncode == 0, f"{where} failed:\n{snippet.code}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{where}:\n{result.stderr[-3000:]}"
        ran += 1
    assert ran > 0


def test_every_skipped_snippet_says_why():
    for page in PAGES:
        for snippet in snippets(page):
            if snippet.skip is not None:
                assert len(snippet.skip) > 10, f"{page}:{snippet.line}: say why it is not run"
