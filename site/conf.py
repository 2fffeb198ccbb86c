"""Sphinx configuration of the course website: `make site` builds it into _build/html from the committed notebook
outputs (nothing is executed), and everything the pages need, MathJax included, is served from the site itself.

`make site` runs `sphinx-build -W -c site . _build/html`: the source folder is the repository, so the chapters,
chapters/README.md and TEACHING.md are pages where they stand and their relative links resolve as on disk, and
every warning (a broken link, a missing image) fails the build. site/ holds this configuration and the site's own
pages (index.md, part2.md, package.md, results.md), which take their text from the README's sections with
`include`, found by their headings: every figure has one source. The table of contents is the toctrees in
site/index.md; a new chapter is one line there (the build fails until it is).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "imagen-tutorial"
author = "the imagen-tutorial authors"
copyright = "the imagen-tutorial authors; code MIT, Fashion-MNIST MIT © 2017 Zalando SE"

extensions = [
    "myst_nb",              # Markdown pages and notebooks, rendered from their stored outputs
    "sphinx_copybutton",    # a copy button on every code block
    "offline_mathjax",      # site/_ext: MathJax 3 from the pinned sphinx-mathjax-offline package, no CDN
    "chapter_downloads",    # site/_ext: each chapter opens with links to download its notebook and student copy
]

# The source folder is the repository itself, so that every relative link in the README, TEACHING and the
# chapters resolves as it does on disk; only these files are pages (student copies are downloads, not pages).
root_doc = "site/index"
include_patterns = ["site/*.md", "chapters/*.ipynb", "chapters/README.md", "TEACHING.md"]
exclude_patterns = [".*", "_build", "chapters/student", "**/.ipynb_checkpoints", "data", "outputs", "runs"]

# Notebooks: shown as committed, never executed.
nb_execution_mode = "off"
nb_merge_streams = True             # consecutive print() lines form one block, as in JupyterLab

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3            # README's and TEACHING's [text](#a-heading) links resolve

html_theme = "sphinx_book_theme"
html_title = "imagen-tutorial"
html_static_path = ["_static"]
templates_path = ["_templates"]
html_additional_pages = {"index": "redirect.html"}   # _build/html/index.html opens the home page, site/index.html
html_css_files = ["course.css"]
html_copy_source = False            # notebooks are offered as downloads on their pages instead
html_show_sourcelink = False
html_theme_options = {
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "use_download_button": False,   # the chapter's own download line replaces it
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "navbar_persistent": [],        # search sits in the sidebar; no second box in a top bar
}


# The README's relative links (chapters/…, TEACHING.md, docs/….png) start from the repository root, and the pages in
# site/ include its sections: rooting them at the source folder (/chapters/…) makes them resolve from any page.
RELATIVE_LINK = re.compile(r"(\]\()(?![A-Za-z][\w+.-]*:|[#/])")


def root_readme_links(app, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    if Path(relative_path).as_posix() == "README.md":
        content[0] = RELATIVE_LINK.sub(r"\1/", content[0])


def setup(app) -> None:
    app.connect("include-read", root_readme_links)
