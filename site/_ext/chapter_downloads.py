"""Each chapter page opens with links to download its notebook: the teacher copy (outputs and solutions) and the
student copy from chapters/student/ (exercises blank, outputs cleared). Student copies are downloads, not pages.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx

CHAPTER = re.compile(r"chapters/(\d\d_\w+)")


def download(target: str, label: str) -> addnodes.download_reference:
    """A link that Sphinx copies `target` (relative to the page's folder) for, into _downloads/."""
    link = addnodes.download_reference("", "", reftarget=target, refexplicit=True, refdomain="", reftype="download")
    link += nodes.inline(label, label)
    return link


def add_download_links(app: Sphinx, doctree: nodes.document) -> None:
    match = CHAPTER.fullmatch(app.env.current_document.docname)
    if match is None:
        return
    name = match[1]
    line = nodes.paragraph(classes=["chapter-downloads"])
    line += nodes.Text("Download ")
    line += download(f"{name}.ipynb", "this notebook")
    line += nodes.Text(" (with its outputs and solutions)")
    if Path(app.srcdir, "chapters", "student", f"{name}.ipynb").is_file():
        line += nodes.Text(" or ")
        line += download(f"student/{name}.ipynb", "its student copy")
        line += nodes.Text(" (exercises blank, outputs cleared)")
    line += nodes.Text(", and run it in the course's folder with ")
    line += nodes.literal("make lab", "make lab")
    line += nodes.Text(".")
    section = doctree.next_node(nodes.section)
    section.insert(1, line)                              # right under the chapter's title


def setup(app: Sphinx) -> dict:
    # before Sphinx's own download collector (priority 500), so that it copies these files too
    app.connect("doctree-read", add_download_links, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
