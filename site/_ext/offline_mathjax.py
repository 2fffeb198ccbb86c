"""MathJax served from the site itself, so formulas render with no network.

The pinned `sphinx-mathjax-offline` package ships a whole MathJax 3 distribution (24 MB); a page needs only the
combined `tex-chtml-full.js` (every TeX package built in, so nothing is fetched later) and its woff-v2 fonts,
1.7 MB together, which this extension copies into `_static/mathjax/`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util.fileutil import copy_asset

SCRIPT = "tex-chtml-full.js"
FONTS = "output/chtml/fonts/woff-v2"


def mathjax_dir() -> Path:
    """The MathJax folder inside the installed sphinx-mathjax-offline package."""
    try:
        dist = distribution("sphinx-mathjax-offline")
    except PackageNotFoundError:
        raise ExtensionError("sphinx-mathjax-offline is not installed; run `make site`, which installs the "
                             "site's pinned environment into .venv-site") from None
    path = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (path / SCRIPT).is_file() or not (path / FONTS).is_dir():
        raise ExtensionError(f"{path} has no {SCRIPT} or {FONTS}: reinstall sphinx-mathjax-offline")
    return path


def copy_mathjax(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    source, target = mathjax_dir(), Path(app.outdir, "_static", "mathjax")
    copy_asset(source / SCRIPT, target)
    copy_asset(source / FONTS, target / FONTS)


def use_local_mathjax(app: Sphinx, config) -> None:
    mathjax_dir()                                        # fail at start, not after the build, when it is missing
    config.mathjax_path = f"mathjax/{SCRIPT}"            # relative: served from _static/


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", use_local_mathjax)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
