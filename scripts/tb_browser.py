"""Look at a search's TensorBoard the way a user does: headless Chromium on a live server.

``python scripts/tb_browser.py <run_dir> [--out docs/img]`` starts TensorBoard on the run's
``tb/`` and ``hparams/`` (free localhost ports), loads each printed URL in headless
Chromium and saves screenshots of the default view, the Pareto figure and the HParams
scatter-plot matrix. ``tests/test_tensorboard_view.py`` drives the same helpers.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ending in a NUL byte on file descriptors 3 and 4), so nothing beyond the
standard library and the ``chromium`` binary is needed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--hide-scrollbars", "--no-first-run"]

# A generator over every element, shadow roots included (the HParams dashboard is Polymer).
DEEP = """
function* deep(root) {
  for (const el of root.querySelectorAll('*')) {
    yield el;
    if (el.shadowRoot) yield* deep(el.shadowRoot);
  }
}
function deepFind(tag) {
  for (const el of deep(document)) if (el.localName === tag) return el;
  return null;
}
"""

# The Time Series tab once its first figure has loaded (else null): every run with its
# tick, each tag group with the titles of the cards it shows (a folded group shows none),
# and the widths of the loaded images.
TIME_SERIES_STATE = """
(() => {
  const all = (root, selector) => [...root.querySelectorAll(selector)];
  const rows = all(document, 'runs-data-table tb-data-table-content-row');
  const runs = rows.map(r => ({
    name: r.dataset.id.split('/').slice(1).join('/'),
    selected: !!r.querySelector('mat-checkbox input')?.checked,
  }));
  const groups = all(document, 'metrics-card-groups-component .card-group').map(g => ({
    name: g.querySelector('.group-title')?.title,
    cards: all(g, 'card-view tb-truncated-path').map(p => p.title),
  }));
  const images = all(document, 'image-card-component img')
    .filter(i => i.complete && i.naturalWidth > 0).map(i => i.naturalWidth);
  return images.length ? {runs, groups, images} : null;
})()
"""

# The HParams dashboard's table (else null): each session group with its metrics.
HPARAMS_STATE = (
    DEEP
    + """
(() => {
  const grid = deepFind('vaadin-grid');
  if (!grid || !grid.items) return null;
  return grid.items.map(g => ({
    name: g.name,
    metrics: Object.fromEntries(g.metricValues.map(m => [m.name.tag, m.value])),
  }));
})()
"""
)


def chromium_path() -> str | None:
    """The Chromium binary (Debian's ``chromium``), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoard:
    """``tensorboard --logdir <logdir>`` on a free localhost port; ``url`` is the address
    TensorBoard printed. A context manager: the server stops on exit."""

    def __init__(self, logdir: str | Path, timeout: float = 60.0) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(free_port()),
                "--reload_interval",
                "1",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.timeout = timeout
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The address TensorBoard printed (waits for it: several servers start at once)."""
        if self._url is None:
            self._url = self._wait_for_url(self.timeout)
        return self._url

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.log.seek(0)
            text = self.log.read().decode(errors="replace")
            m = re.search(r"TensorBoard \S+ at (http://\S+/)", text)
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited ({self.proc.returncode}):\n{text}")
            time.sleep(0.2)
        self.close()
        raise RuntimeError(f"tensorboard printed no URL in {timeout:.0f} s")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as r:
            body = r.read()
        return json.loads(body) if r.headers.get_content_type() == "application/json" else body

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(
            self.url + path.lstrip("/"),
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def wait_for(self, path: str, ready, timeout: float = 30.0):
        """GET ``path`` until ``ready(answer)``: the server reads event files in the
        background, so a fresh one first answers with part of them (or 400 for a run it
        has not read yet)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = self.get(path)
            except urllib.error.HTTPError:
                answer = None
            if (answer is not None and ready(answer)) or time.monotonic() > deadline:
                return answer
            time.sleep(0.5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, width: int = 1400, height: int = 1000, binary: str | None = None) -> None:
        binary = binary or chromium_path()
        if binary is None:
            raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
        self.profile = tempfile.TemporaryDirectory(prefix="mnas-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()

        def pipes_on_3_and_4() -> None:
            # Park both ends above 4 first: either could already sit on 3 or 4.
            high = max(to_browser_r, from_browser_w, 4) + 1
            os.dup2(to_browser_r, high)
            os.dup2(from_browser_w, high + 1)
            os.dup2(high, 3)
            os.dup2(high + 1, 4)
            os.closerange(5, high + 2)

        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile.name}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=pipes_on_3_and_4,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._out = os.fdopen(to_browser_w, "wb", buffering=0)
        self._in = os.fdopen(from_browser_r, "rb", buffering=0)
        self._buffer = b""
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def _message(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = self._in.read(1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        while True:
            answer = self._message()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def page(self, method: str, **params) -> dict:
        return self.call(method, self.session, **params)

    def goto(self, url: str) -> None:
        self.page("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.page(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0, interval: float = 0.5):
        """Evaluates ``expression`` until it is truthy; returns its last value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(interval)

    def screenshot(self, path: str | Path, clip: dict | None = None) -> None:
        params = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.page("Page.captureScreenshot", **params)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._in.close()
        self.profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# Clicks the first element named %s whose text is %s (tabs and checkboxes of the Polymer
# dashboards); true when one was found.
CLICK = (
    DEEP
    + """
((tag, label) => {
  for (const el of deep(document))
    if (el.localName === tag && el.innerText.trim().toUpperCase() === label.toUpperCase()) {
      el.click();
      return true;
    }
  return false;
})(%s, %s)
"""
)

# The Images tab's first card, with a margin, as a screenshot clip (null until its image
# has loaded).
IMAGE_CARD_BOX = (
    DEEP
    + """
(() => {
  const card = deepFind('tf-image-loader');
  const img = card && [...deep(card.shadowRoot ?? card)].find(e => e.localName === 'img');
  if (!img || !img.naturalWidth) return null;
  const r = card.getBoundingClientRect();
  return {x: r.x - 12, y: r.y - 12, width: r.width + 24, height: r.height + 24};
})()
"""
)

SCATTER_READY = (
    DEEP
    + """
(() => {
  const view = deepFind('tf-hparams-scatter-plot-matrix-plot');
  if (!view || !view.shadowRoot) return 0;
  return view.shadowRoot.querySelectorAll('circle, .point, path').length;
})()
"""
)


def click(tag: str, label: str) -> str:
    return CLICK % (json.dumps(tag), json.dumps(label))


def screenshots(run_dir: Path, out_dir: Path, settle: float = 3.0) -> list[Path]:
    """PNG screenshots of a finished search's TensorBoard views, as a user opens them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    with (
        TensorBoard(run_dir / "tb") as main,
        TensorBoard(run_dir / "hparams") as hparams,
        Browser(width=1700, height=1300) as browser,
    ):
        # Time Series draws its charts with WebGL, which headless Chromium (no GPU) leaves
        # blank; TensorBoard's SVG renderer (forceSVG) draws the same lines.
        browser.goto(main.url + "?forceSVG=true")
        browser.wait_for(TIME_SERIES_STATE)
        time.sleep(settle)
        saved.append(out_dir / "tb_default.png")
        browser.screenshot(saved[-1])

        browser.goto(main.url + "#images")
        browser.wait_for(IMAGE_CARD_BOX)
        browser.evaluate(click("paper-checkbox", "Show actual image size"))
        time.sleep(settle)
        saved.append(out_dir / "tb_pareto.png")
        browser.screenshot(saved[-1], clip=browser.evaluate(IMAGE_CARD_BOX))

        browser.goto(hparams.url + "#hparams")
        browser.wait_for(HPARAMS_STATE)
        browser.evaluate(click("paper-tab", "Scatter plot matrix view"))
        browser.wait_for(SCATTER_READY)
        time.sleep(settle)
        saved.append(out_dir / "tb_hparams_scatter.png")
        browser.screenshot(saved[-1])
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a search's run directory")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    for path in screenshots(args.run_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
