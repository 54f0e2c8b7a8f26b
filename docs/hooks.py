"""MkDocs hooks: pages generated from the code and the repository, so the site cannot drift from them.

- ``strategies/NAME.md``, one page per registered strategy, and ``strategies/index.md``, from
  ``batchal``'s registry (``Strategy.summary``, ``when``, the inputs and options it declares);
- ``<!-- include: PATH -->`` in a page is replaced by that repository file's text (the results'
  README, the changelog), its headings demoted under the page's title, its links to repository
  files turned into code spans (they are not pages of the site) and its images added to the site;
- images the pages show from ``results/`` are added to the site from there (no second copy in
  ``docs/``).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]

#: Site path -> repository file, for pictures the pages show that live with the results.
IMAGES = {"img/demo-learning-curves.png": "results/demo/repeated-digits/report-b10-batchbald+bald+random/learning_curves.png",
          "img/compare-labels-saved.png": "results/compare-digits/labels_saved.png"}

_INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.M)
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _strategy_page(name: str) -> str:
    from batchal.acquisition.registry import get_strategy

    spec = get_strategy(name)
    if spec.pool_input:
        inputs = f"`{spec.pool_input}`" + (" and `embeddings_N_D`" if spec.needs_embeddings else "")
    else:
        parts = (["`log_probs_N_K_C` (" + ("the features pass" if spec.log_probs_from == "features_pass" else "K posterior samples") + ")"]
                 if spec.needs_log_probs else []) + (["`embeddings_N_D`"] if spec.needs_embeddings else [])
        inputs = " and ".join(parts) or "only the pool's size"
    rows = "\n".join(f"| `{option}` | `{default!r}` |" for option, default in spec.defaults.items())
    options = f"| option | default |\n|---|---|\n{rows}" if rows else "None."
    extra = []
    if spec.needs_labelled:
        extra.append(f"Takes the labelled set too: {', '.join(f'`{n}`' for n in spec.needs_labelled)}.")
    if spec.stateful:
        extra.append("Stateful: pass `info['state']` back as `state=` in the next round.")
    if spec.running_total:
        extra.append("Scores are the batch's running total after each pick (`Selection.gains` gives each pick's gain).")
    return (f"# `{name}`\n\n*Label kind: {spec.kind}.*\n\n{spec.summary}\n\n## When to use it\n\n{spec.when or 'Not stated.'}\n\n"
            f"## Inputs\n\n{inputs}.\n\n{' '.join(extra)}\n\n## Options\n\n{options}\n\n"
            f"```python\nbatchal.select(\"{name}\", batch_size, ..., seed=0)   # batchal.describe(\"{name}\") prints this page's summary\n```\n")


def _strategy_index() -> str:
    from batchal.acquisition.registry import KINDS, get_strategy, strategies

    out = ["# Strategies", "", "Every registered strategy, by label kind; each page is generated from batchal's registry "
           "(`batchal strategies NAME` prints the same summary). All meet one contract: `batchal.check_strategy(name)`.", ""]
    for kind in KINDS:
        out += [f"## {kind.capitalize()}", "", "| strategy | what it does |", "|---|---|"]
        out += [f"| [`{name}`]({name}.md) | {get_strategy(name).summary.split('. ')[0].replace('|', '/')} |" for name in strategies(kind)]
        out.append("")
    return "\n".join(out)


def on_config(config):
    """The Strategies section lists every registered strategy's page, by label kind."""
    from batchal.acquisition.registry import KINDS, strategies

    section = [{"Overview": "strategies/index.md"}] + [
        {kind.capitalize(): [{name: f"strategies/{name}.md"} for name in strategies(kind)]} for kind in KINDS]
    config["nav"] = [{"Strategies": section} if isinstance(entry, dict) and "Strategies" in entry else entry for entry in config["nav"]]
    return config


def on_files(files, config):
    from batchal.acquisition.registry import strategies

    files.append(File.generated(config, "strategies/index.md", content=_strategy_index()))
    for name in strategies():
        files.append(File.generated(config, f"strategies/{name}.md", content=_strategy_page(name)))
    for site_path, repo_path in IMAGES.items():
        files.append(File.generated(config, site_path, abs_src_path=str(REPO / repo_path)))
    for page in Path(config["docs_dir"]).rglob("*.md"):
        for included in _INCLUDE.findall(page.read_text()):
            for image in _images_of(included):
                site_path = f"included/{image}"
                if not files.get_file_from_path(site_path):
                    files.append(File.generated(config, site_path, abs_src_path=str(REPO / image)))
    return files


def _images_of(repo_path: str) -> list[str]:
    """Repository paths of the images a repository Markdown file shows."""
    base = (REPO / repo_path).parent
    text = (REPO / repo_path).read_text()
    return [str((base / target).resolve().relative_to(REPO)) for bang, _, target in _LINK.findall(text)
            if bang and not target.startswith(("http://", "https://")) and (base / target).is_file()]


def _included(repo_path: str, page_depth: int) -> str:
    base = (REPO / repo_path).parent
    text = (REPO / repo_path).read_text()
    text = re.sub(r"^# .*\n", "", text, count=1)  # the page has its own title
    text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)

    def link(match: re.Match) -> str:
        bang, label, target = match.groups()
        if target.startswith(("http://", "https://", "#", "mailto:")):
            return match.group(0)
        resolved = (base / target.split("#")[0]).resolve()
        if bang and resolved.is_file():
            return f"![{label}]({'../' * page_depth}included/{resolved.relative_to(REPO)})"
        shown = resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else target
        return f"{label} (`{shown}`)" if label and label != str(shown) else f"`{shown}`"

    return _LINK.sub(link, text)


def _datasets_table() -> str:
    from batchal.data.datasets import SIZES
    from batchal.regression_run import REGRESSION_SIZES

    rows = [f"| `{name}` | {train:,} | {test:,} | {classes} | {what} |" for name, (train, test, classes, what) in SIZES.items()]
    rows += [f"| `{name}` | {count:,} rows (20% held out for test) | | regression | {what} |" for name, (count, what) in REGRESSION_SIZES.items()]
    return "\n".join(["| data set | training points | test points | classes | one input |", "|---|---|---|---|---|", *rows])


def on_page_markdown(markdown, page, config, files):
    depth = page.file.src_uri.count("/")
    markdown = markdown.replace("<!-- datasets-table -->", _datasets_table())
    return _INCLUDE.sub(lambda m: _included(m.group(1), depth), markdown)
