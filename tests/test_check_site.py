"""The website's browser check (tools/check_site.py) fails on what a reader would see broken: it is run on a
small page with one of each fault. Needs Debian's chromium; without it these tests are skipped."""

import contextlib
import io
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import check_site  # noqa: E402

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium (apt-get install chromium)")

# The smallest GIF: one transparent pixel.
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
LONG_LINE = "loss " * 80

BROKEN = f"""<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><article>
<p>An energy $E = mc^2$ that was never parsed as maths.</p>
<p>A formula for MathJax, on a page without it: <span class="math">\\(x^2\\)</span></p>
<img src="missing.png">
<img src="http://example.com/figure.png">
<a href="chapters/99_missing.html">a chapter that is not there</a>
<div class="cell_output"><pre>{LONG_LINE}</pre></div>
<p class="cell-tags">nbval-check-output</p>
<script>throw new Error("the theme's script broke");</script>
</article></body></html>"""

CLEAN = f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<style>div.cell_output pre {{ white-space: pre-wrap; overflow-wrap: anywhere; }}</style></head><body><article>
<p>A figure, a link and a long printed line that wraps.</p>
<img src="pixel.gif"> <a href="pixel.gif#top">the figure</a> <a href="https://example.com/">not followed</a>
<div class="cell_output"><pre>{LONG_LINE}</pre></div>
</article></body></html>"""


def run_check(site: Path, html: str) -> tuple[int, str]:
    site.mkdir()
    (site / "index.html").write_text(html)
    (site / "pixel.gif").write_bytes(PIXEL)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = check_site.main(["--site", str(site), "--page", "index.html"])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return run_check(tmp_path_factory.mktemp("broken") / "html", BROKEN)


@needs_chromium
def test_a_page_with_faults_fails_the_check(broken):
    code, report = broken
    assert code == 1 and "check_site: FAILED, " in report


@needs_chromium
@pytest.mark.parametrize("fault, message", [
    ("raw TeX in the text", "raw TeX left in the text: 'An energy $E = mc^2$"),
    ("maths MathJax did not typeset", "maths not typeset by MathJax: '\\\\(x^2\\\\)'"),
    ("a missing image", "image missing: 'missing.png'"),
    ("the missing image's file", "missing.png (net::ERR_FILE_NOT_FOUND)"),
    ("a request to another machine", "request left the machine: http://example.com/figure.png"),
    ("a link to a missing file", "link to a missing file: chapters/99_missing.html"),
    ("a printed output that scrolls sideways", "printed output scrolls sideways: 'loss loss"),
    ("a notebook cell tag", "cell tag shown: 'nbval-check-output'"),
    ("a JavaScript error", "JavaScript error: Error: the theme's script broke"),
])
def test_each_fault_is_reported(broken, fault, message):
    assert message in broken[1], f"{fault} was not reported"


@needs_chromium
def test_a_clean_page_passes_and_says_what_it_checked(tmp_path):
    code, report = run_check(tmp_path / "html", CLEAN)
    assert code == 0, report
    assert "1 pages, 0 formulas rendered, 1 images (1 GIFs), 1 printed outputs, 1 links followed" in report
    assert "0 requests that left the machine" in report


def test_without_chromium_the_check_says_so_in_one_line_and_passes(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.setattr(check_site.shutil, "which", lambda name: None)
    assert check_site.main(["--site", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == "check_site: skipped, no chromium on this machine (Debian: apt-get install chromium)\n"
