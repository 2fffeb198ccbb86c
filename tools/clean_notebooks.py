"""Keep committed notebooks clean: outputs stay (learners read them on the web), stray metadata goes.

    python tools/clean_notebooks.py            # clean chapters/*.ipynb (and chapters/student/) in place
    python tools/clean_notebooks.py --check    # exit 1 and list the notebooks that are not clean
    python tools/clean_notebooks.py PATH ...   # only these notebooks

Kept: cell sources, outputs, execution counts, cell ids and tags (nbval reads `nbval-check-output`), the
kernelspec/language name, and the course's own `imagen_tutorial` entry (chapter and copy, read by the grader).
Dropped: widget state, timing and collapse metadata, trust signatures, editor settings, anything else tools add.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def clean(notebook: dict) -> dict:
    """A copy of the notebook dict with only the metadata we keep."""
    out = dict(notebook)
    out["metadata"] = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    course = notebook.get("metadata", {}).get("imagen_tutorial")
    if course:  # which chapter and which copy (the grader reads it: `python -m imagen_tutorial grade`)
        out["metadata"]["imagen_tutorial"] = course
    cells = []
    for cell in notebook.get("cells", []):
        cell = dict(cell)
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": sorted(set(tags))} if tags else {}
        if cell.get("cell_type") == "code":
            cell["outputs"] = [_clean_output(o) for o in cell.get("outputs", [])]
        if not cell.get("attachments"):
            cell.pop("attachments", None)
        cells.append(cell)
    out["cells"] = cells
    return out


def _clean_output(output: dict) -> dict:
    output = dict(output)
    if "metadata" in output:
        output["metadata"] = {}
    data = output.get("data")
    if data and "application/vnd.jupyter.widget-view+json" in data:  # a progress-bar widget: keep its text
        output["data"] = {k: v for k, v in data.items() if not k.startswith("application/vnd.jupyter.widget")}
    return output


def dumps(notebook: dict) -> str:
    return json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def default_paths() -> list[Path]:
    return sorted((ROOT / "chapters").glob("[0-9]*.ipynb")) + sorted((ROOT / "chapters" / "student").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="report unclean notebooks, change nothing")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths or default_paths():
        text = path.read_text(encoding="utf-8")
        cleaned = dumps(clean(json.loads(text)))
        if cleaned != text:
            dirty.append(path)
            if not args.check:
                path.write_text(cleaned, encoding="utf-8")
    if args.check and dirty:
        names = ", ".join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in dirty)
        print(f"not clean: {names}; run `python tools/clean_notebooks.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
