"""Open the built course website in headless Chromium with the network cut off and check what a reader sees.

    python tools/check_site.py [--site _build/html] [--page chapters/06_sampling.html ...] [--screenshots DIR]

For each page (by default every page of the book) it waits for MathJax and the fonts, then fails if a formula is
left unrendered (a MathJax error, a maths element MathJax did not typeset, or raw `$…$` / `\\(…\\)` in the
text), an image is missing, a link points at a missing file, a printed output scrolls sideways instead of
wrapping, a notebook cell tag shows, the page throws a JavaScript error, a local file is missing, or any request
tried to leave the machine: every host name resolves to nothing (`--host-resolver-rules`), and each request the
page makes that is not a local file is counted as one that would have gone out. It also searches the site from
`file://` and checks that it finds pages. It prints what it checked. Without Chromium (Debian: `apt-get install
chromium`) it says so in one line and exits 0.

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`), with the standard
library only, so the check adds no package to any environment.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlparse

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,900", "--remote-debugging-pipe"]
LOCAL_SCHEMES = {"file", "data", "blob", "about"}
SKIP_PAGES = {"genindex.html", "search.html"}   # Sphinx's own index and search pages (search is checked apart)
SEARCH_WORD = "attention"

# Runs in the page once it has loaded: waits for MathJax and the fonts, then measures what the reader sees.
INSPECT = r"""
(async () => {
  const wait = (promise, ms) => Promise.race([promise, new Promise(r => setTimeout(r, ms))]);
  const maths = [...document.querySelectorAll('.math')];
  if (maths.length && window.MathJax && MathJax.startup) await wait(MathJax.startup.promise, 30000);
  await wait(document.fonts.ready, 10000);
  const root = document.querySelector('article') || document.body;
  const raw = [], tags = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const skip = 'pre, code, kbd, script, style, textarea, mjx-container, .highlight, .math';
  while (walker.nextNode()) {
    const node = walker.currentNode, text = node.textContent;
    if (node.parentElement.closest(skip)) continue;
    if (/\$[^$\s][^$]*\$|\$\$|\\\(|\\\[/.test(text)) raw.push(text.trim().slice(0, 80));
    if (/\b(nbval-[a-z-]+|raises-exception|(hide|remove)-(cell|input|output))\b/.test(text)) {
      tags.push(text.trim().slice(0, 80));
    }
  }
  const images = [...document.querySelectorAll('img')];
  const src = img => img.getAttribute('src') || '';
  return {
    url: location.href,
    maths: maths.length,
    formulas: document.querySelectorAll('mjx-container').length,
    untypeset: maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    errors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80)),
    raw, tags,
    images: images.length,
    gifs: images.filter(img => /\.gif$|^data:image\/gif/.test(src(img))).length,
    broken: images.filter(img => !img.complete || img.naturalWidth === 0).map(src),
    links: [...new Set([...document.querySelectorAll('a[href]')].map(a => a.href.split('#')[0].split('?')[0]))]
      .filter(href => href.startsWith('file:')),
    outputs: document.querySelectorAll('div.cell_output pre').length,
    sideways: [...document.querySelectorAll('div.cell_output pre')]
      .filter(pre => pre.scrollWidth > pre.clientWidth + 1).map(pre => pre.textContent.slice(0, 80)),
  };
})()
"""

# Runs in search.html?q=...: waits for Sphinx's search to finish and counts the pages it found.
SEARCH = r"""
(async () => {
  for (let i = 0; i < 200; i++) {
    const status = document.querySelector('#search-results .search-summary, #search-results p');
    if (status && /found/i.test(status.textContent)) break;
    await new Promise(r => setTimeout(r, 50));
  }
  return document.querySelectorAll('#search-results ul.search li').length;
})()
"""


class CheckError(Exception):
    pass


class Chromium:
    """A headless Chromium with a fresh profile, spoken to through the DevTools protocol on fds 3 and 4."""

    def __init__(self, executable: str, profile: str):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def give_pipes():                       # in the child: its fd 3 reads our commands, its fd 4 answers
            a = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                                     preexec_fn=give_pipes, pass_fds=(3, 4))
        os.close(to_browser)
        os.close(from_browser)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        buffer = b""
        while chunk := os.read(self._read, 1 << 20):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self.messages.put(json.loads(message))
        self.messages.put(None)                 # the browser closed its end

    def _next(self, deadline: float) -> dict:
        try:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise CheckError("Chromium did not answer in time") from None
        if message is None:
            self.log.seek(0)
            raise CheckError("Chromium exited:\n" + self.log.read().decode(errors="replace")[-2000:])
        return message

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        command = {"id": self.next_id, "method": method, "params": params}
        if session:
            command["sessionId"] = session
        os.write(self._write, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise CheckError(f"{method}: {message['error'].get('message')}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._next(deadline))

    def drain(self, quiet: float = 0.3) -> None:
        """Collect events until none has come for `quiet` seconds."""
        while True:
            try:
                message = self.messages.get(timeout=quiet)
            except queue.Empty:
                return
            if message is None:
                return
            self.events.append(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except CheckError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def open_page(browser: Chromium, session: str, url: str, script: str,
              redirects: bool = False) -> tuple[dict, list[str], list[str], int]:
    """Load `url` (and the page it `redirects` to), run `script` in it; return its result, the requests that were
    not local files, the local files that failed to load and the page's JavaScript errors, and how many local files
    were requested."""
    browser.events.clear()
    browser.call("Page.navigate", session, url=url)
    for _ in range(2 if redirects else 1):
        browser.wait_for("Page.loadEventFired")
    value = browser.call("Runtime.evaluate", session, expression=script, awaitPromise=True, returnByValue=True)
    if "exceptionDetails" in value:
        raise CheckError(f"{url}: the check script failed: {value['exceptionDetails']}")
    browser.drain()
    urls, external, failed, local = {}, [], [], 0
    for event in browser.events:
        params = event.get("params", {})
        if event.get("method") == "Network.requestWillBeSent":
            request_url = params["request"]["url"]
            urls[params["requestId"]] = request_url
            if urlparse(request_url).scheme not in LOCAL_SCHEMES:
                external.append(request_url)
            elif request_url.startswith("file:"):
                local += 1
        elif event.get("method") == "Network.loadingFailed":
            request_url = urls.get(params["requestId"], "?")
            if urlparse(request_url).scheme in LOCAL_SCHEMES:
                failed.append(f"{request_url} ({params.get('errorText')})")
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            failed.append(f"JavaScript error: {text}")
    return value["result"].get("value"), external, failed, local


def book_pages(site: Path) -> list[str]:
    """Every page of the book: the HTML files outside _static/ etc., less Sphinx's own pages and the redirect."""
    pages = (p.relative_to(site) for p in site.rglob("*.html"))
    return sorted(p.as_posix() for p in pages
                  if not p.parts[0].startswith("_") and p.name not in SKIP_PAGES and p != Path("index.html"))


FAULTS = (("untypeset", "maths not typeset by MathJax"), ("errors", "MathJax error"),
          ("raw", "raw TeX left in the text"), ("broken", "image missing"),
          ("sideways", "printed output scrolls sideways"), ("tags", "cell tag shown"))


def check_page(browser: Chromium, session: str, site: Path, page: str, totals: Counter) -> list[str]:
    """Open one page, print what it shows, add it to `totals`; return its problems."""
    url = (site / page).resolve().as_uri()
    redirects = 'http-equiv="refresh"' in (site / page).read_text(errors="replace")   # the site's index.html
    seen, external, failed, local = open_page(browser, session, url, INSPECT, redirects)
    landed = Path(unquote(urlparse(seen["url"]).path)).relative_to(site.resolve()).as_posix()
    where = page if landed == page else f"{page} → {landed}"
    problems = [f"{where}: {what}: {item!r}" for key, what in FAULTS for item in seen[key]]
    problems += [f"{where}: request left the machine: {item}" for item in external]
    problems += [f"{where}: {item}" for item in failed]
    for link in seen["links"]:
        target = Path(unquote(urlparse(link).path))
        if not target.exists():
            problems.append(f"{where}: link to a missing file: {os.path.relpath(target, site.resolve())}")
    print(f"  {where}: {seen['formulas']} formulas, {seen['images']} images ({seen['gifs']} GIFs), "
          f"{seen['outputs']} printed outputs, {len(seen['links'])} links, {local} local files, "
          f"{len(external)} outside requests")
    totals.update(pages=1, formulas=seen["formulas"], images=seen["images"], gifs=seen["gifs"],
                  outputs=seen["outputs"], links=len(seen["links"]), local=local, external=len(external))
    return problems


def check_search(browser: Chromium, session: str, site: Path, totals: Counter) -> tuple[str, list[str]]:
    """Search the site from file://; return a note on what it found and the problems."""
    if not (site / "search.html").is_file():
        return "no search.html, search not checked", []
    # From file:// the search finds pages but cannot fetch them for the snippets under each result (a browser
    # refuses fetch() on file://; served over http they show), so only outside requests count here.
    url = (site / "search.html").resolve().as_uri() + f"?q={SEARCH_WORD}"
    found, external, _, _ = open_page(browser, session, url, SEARCH)
    totals.update(external=len(external))
    problems = [f"search.html: request left the machine: {item}" for item in external]
    if not found:
        problems.append(f"search.html: searching for {SEARCH_WORD!r} from file:// found no page")
    return f"search for {SEARCH_WORD!r} found {found} pages", problems


def check(site: Path, pages: list[str], screenshots: Path | None, executable: str) -> int:
    problems: list[str] = []
    totals: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="check-site-") as profile:
        browser = Chromium(executable, profile)
        try:
            target = next(t for t in browser.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = browser.call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
            for domain in ("Page", "Network", "Runtime"):
                browser.call(f"{domain}.enable", session)
            for page in pages:
                problems += check_page(browser, session, site, page, totals)
                if screenshots is not None:
                    screenshots.mkdir(parents=True, exist_ok=True)
                    shot = browser.call("Page.captureScreenshot", session, format="png")["data"]
                    name = page.replace("/", "_").removesuffix(".html") + ".png"
                    (screenshots / name).write_bytes(base64.b64decode(shot))
            searched, search_problems = check_search(browser, session, site, totals)
            problems += search_problems
        finally:
            browser.close()
    print(f"check_site: {totals['pages']} pages, {totals['formulas']} formulas rendered, {totals['images']} images "
          f"({totals['gifs']} GIFs), {totals['outputs']} printed outputs, {totals['links']} links followed to their "
          f"files, {totals['local']} local files loaded, "
          f"{totals['external']} requests that left the machine; {searched}")
    if problems:
        print(f"check_site: FAILED, {len(problems)} problems:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print("check_site: ok: no unrendered formula, missing image, broken link, sideways output, shown cell tag, "
          "JavaScript error or outside request")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, default=Path("_build/html"), help="the built site (make site)")
    parser.add_argument("--page", action="append", dest="pages", metavar="PATH",
                        help="a page to check, relative to --site (repeatable); default: every page of the book")
    parser.add_argument("--screenshots", type=Path, metavar="DIR", help="save a screenshot of each page here")
    args = parser.parse_args(argv)
    executable = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        print("check_site: skipped, no chromium on this machine (Debian: apt-get install chromium)")
        return 0
    if not (args.site / "index.html").is_file():
        print(f"error: {args.site}/index.html not found; build the site first with `make site`", file=sys.stderr)
        return 2
    pages = args.pages or ["index.html", *book_pages(args.site)]
    missing = [page for page in pages if not (args.site / page).is_file()]
    if missing:
        print(f"error: no such page in {args.site}: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        return check(args.site, pages, args.screenshots, executable)
    except CheckError as error:
        print(f"check_site: FAILED: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
