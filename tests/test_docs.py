"""The documentation runs as it stands: the README and every page of the site (docs/).

- every Python block of a page runs, in order, in one namespace per page (a collapsed "Setup"
  block on the page provides what its examples assume), from a temporary folder; a block that
  cannot run here is preceded by ``<!-- not-run: why -->`` and the reason must name the test
  that runs the same calls;
- every bash block installs, serves or simulates for minutes, so none runs here: each is preceded
  by ``<!-- not-run: why -->`` naming the test that runs the same commands, and every
  ``batchal ...`` line in it parses with the command line's parser; every ``from batchal...
  import ...`` imports; text, TOML and BibTeX blocks are data, not code;
- the site builds with ``mkdocs build --strict`` (warnings are errors), and Chromium opens its
  main pages with no console error and no internal link that fails (tests/test_docs.py builds
  into a temporary folder; nothing is written into the repository).
"""

from __future__ import annotations

import re
import shlex
import textwrap
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
BLOCK = re.compile(r"^(?P<indent>[ ]*)```(?P<language>\w+)\n(?P<code>.*?)^(?P=indent)```", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not-run: (?P<why>[^>]+) -->\s*$")


def blocks(page: Path, language: str) -> list[tuple[str, str | None]]:
    """(code, reason it is not run or None) of each block of ``language``, in page order."""
    text = page.read_text()
    out = []
    for match in BLOCK.finditer(text):
        if match.group("language") != language:
            continue
        before = text[: match.start()].rstrip("\n").splitlines()[-1:] or [""]
        marker = NOT_RUN.search(before[0])
        out.append((textwrap.dedent(match.group("code")),
                    marker.group("why") if marker else None))
    return out


def _name(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=_name)
def test_every_python_block_of_the_page_runs(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for code, why in blocks(page, "python"):
        if why is not None:
            assert re.search(r"tests/test_\w+\.py", why), f"{_name(page)}: a block not run must name the test that runs its calls: {why}"
            continue
        exec(compile(code, _name(page), "exec"), namespace)
        ran += 1
    assert ran or page.name == "integrations.md"


def test_the_own_model_loop_prints_its_rounds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for code, _ in blocks(REPO / "docs" / "guide" / "own-data.md", "python"):
        exec(compile(code, "own-data.md", "exec"), namespace)
    out = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in out] == ["round 0", "round 1", "round 2"]
    assert "50 labels" in out[-1]


def _commands() -> list[str]:
    """Every `batchal ...` command line of the pages' bash blocks, continuations joined,
    comments, redirections and a trailing & dropped."""
    out = []
    for page in PAGES:
        for code, _ in blocks(page, "bash"):
            for line in code.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].split(">", 1)[0].strip().rstrip("&").strip()
                if line.startswith("batchal "):
                    out.append(line)
    return out


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "bash")], ids=_name)
def test_every_shell_block_says_which_test_runs_its_commands(page):
    for code, why in blocks(page, "bash"):
        assert why is not None, f"{_name(page)}: a bash block without <!-- not-run: why --> before it:\n{code}"
        assert re.search(r"tests/test_\w+\.py", why), f"{_name(page)}: the reason must name the test that runs these commands: {why}"


def test_every_batchal_command_line_parses():
    """Every `batchal ...` line the pages show is accepted by the parser (subcommand, flags, values)."""
    from batchal.cli import build_parser

    commands = _commands()
    assert any(c.startswith("batchal label-studio serve") for c in commands) and any("--dataset diabetes" in c for c in commands)
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            raise AssertionError(f"command does not parse: {command}") from exc


def test_every_import_the_pages_show_exists():
    import importlib

    lines = [line.strip() for page in PAGES for code, _ in blocks(page, "python") for line in code.splitlines()
             if line.strip().startswith("from batchal")]
    assert len(lines) >= 4
    for line in lines:
        module, names = re.match(r"from (\S+) import (.+)", line).groups()
        imported = importlib.import_module(module)
        for name in names.split("#")[0].split(","):
            assert hasattr(imported, name.strip()), line


def test_the_readme_is_a_front_page():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first = text.split("\n\n")[1]
    assert first.startswith("batchal is") and "active learning" in first
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / target).is_file(), target


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]', part of [dev]) is not installed")
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(out)],
                          capture_output=True, text=True, cwd=REPO, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_site_builds_strictly_with_a_page_per_strategy(site):
    import batchal

    for name in batchal.strategies():
        page = (site / "strategies" / f"{name}.html").read_text()
        assert batchal.acquisition.registry.get_strategy(name).summary.split(" ")[0] in page
    api = (site / "api.html").read_text()
    assert "check_strategy" in api and "predict_log_probs" in api


MAIN_PAGES = ["index.html", "getting-started.html", "guide/selecting.html", "guide/compare.html", "guide/labelling.html",
              "strategies/index.html", "strategies/batchbald.html", "api.html", "reproductions.html", "changelog.html"]


def test_chromium_renders_the_main_pages_with_no_error_and_no_broken_link(site):
    from browser_support import chromium_or_skip  # the browser tests' one way to start Debian's chromium

    import functools
    import http.server
    import threading
    from urllib.parse import urljoin, urlparse

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with chromium_or_skip() as browser:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda message: errors.append(f"{page.url}: {message.text}") if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
            links: set[str] = set()
            for path in MAIN_PAGES:
                response = page.goto(root + path)
                assert response is not None and response.ok, path
                assert page.locator("h1").count() >= 1, f"{path} has no title"
                hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
                images = page.eval_on_selector_all("img[src]", "els => els.map(e => e.src)")
                links |= {h.split("#")[0] for h in hrefs + images if urlparse(h).netloc == urlparse(root).netloc}
            assert not errors, errors
            broken = [link for link in sorted(links) if not page.request.get(link).ok]
            assert not broken, broken
            assert len(links) > 40
    finally:
        server.shutdown()
