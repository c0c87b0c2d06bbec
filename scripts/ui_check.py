"""The MLflow UI as a person sees it: start the UI on 127.0.0.1 for a tracking store, open it in
headless Chromium (Debian package `chromium`) and save screenshots under docs/:

    python scripts/ui_check.py TRACKING_URI [--out docs] [--defender baseline]

- docs/ui-runs.png     the experiment's run table (pipeline parent runs and their stage runs)
- docs/ui-metric.png   one defender's training curve (its stage run's per-epoch metrics)
- docs/ui-models.png   the registered models page (advgame-<defender>, alias `study`)

TRACKING_URI is a SQLite store (sqlite:///.../mlflow.db: the UI is started here and stopped at
the end) or a running server (http://127.0.0.1:PORT: its own UI is used). It checks what the
store holds (the runs, the metric and the registered models exist) before it takes pictures,
and that each picture is a real page (not blank): exit 1 and one line otherwise.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from advgame.pipeline.server import HOST, free_port, wait_ready  # noqa: E402


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("ui-check: no Chromium found; install it: apt-get install chromium")


class Browser:
    """Headless Chromium driven through the DevTools protocol over a pipe (--remote-debugging-pipe:
    JSON messages ending in NUL on fds 3 and 4), so no driver package is needed: navigate, let
    the JavaScript app render, dismiss the UI's first-visit pop-ups, capture the page."""

    def __init__(self, width: int = 1400, height: int = 900):
        import os

        self.profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)  # Chromium's helpers may still write
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}", f"--window-size={width},{height}",
             "about:blank"], close_fds=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=lambda: _onto_3_and_4(to_chrome_r, from_chrome_w))
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._id, self._buf, self.session = 0, b"", None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params):
        import os

        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise SystemExit("ui-check: Chromium closed its DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise SystemExit(f"ui-check: {method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True).get("result", {}).get("value")

    def shot(self, url: str, out: Path, ready: str, then: str = "", shows: str = "", timeout: float = 90) -> None:
        """`ready`: text the page shows once its data arrived (the UI fetches after first paint);
        `then`: script run after that; `shows`: text the page must show after it."""
        import base64

        self.call("Page.navigate", url=url)
        self._wait(url, ready, timeout)
        time.sleep(3)  # charts and tables finish drawing
        for _ in range(3):  # first-visit pop-ups (feature tours, the assistant panel) hide the page
            self.js(DISMISS)
            time.sleep(1.5)
        if then:
            self.js(then)
            time.sleep(3)
        if shows:
            self._wait(url, shows, timeout)
            time.sleep(2)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        out.write_bytes(base64.b64decode(data))
        if not looks_rendered(out):
            raise SystemExit(f"ui-check: {out} is blank: the UI did not render {url}")

    def _wait(self, url: str, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(f"document.body && document.body.innerText.includes({json.dumps(text)})"):
            if time.monotonic() > deadline:
                raise SystemExit(f"ui-check: {url} never showed '{text}' within {timeout:.0f} s")
            time.sleep(1)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.profile.cleanup()


def _onto_3_and_4(r: int, w: int) -> None:
    """In Chromium's process: its pipe ends on fds 3 and 4 (copied first: one may be 3 or 4)."""
    import os

    r2, w2 = os.dup(r), os.dup(w)
    os.dup2(r2, 3)
    os.dup2(w2, 4)


# the run table shows a pipeline's stage runs only once its parent row is expanded
EXPAND = """(() => { let n = 0;
  for (const b of document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')) {
    b.click(); n++; }
  return n; })()"""

# the run page lists its metrics' charts in sections, the stage's training summary first: the
# search box keeps the charts of one metric (React reads the input through its value setter)
SEARCH = """(m => { const i = document.querySelector('input[placeholder*="Search metric"]');
  if (!i) return false;
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set.call(i, m);
  i.dispatchEvent(new Event('input', {bubbles: true})); return true; })"""

# clicks what closes a pop-up: "Got it" / "Close" buttons and close icons (not links or tabs)
DISMISS = """(() => { const hit = [];
  for (const b of document.querySelectorAll('button')) {
    const t = (b.innerText || '').trim(), a = b.getAttribute('aria-label') || '';
    if (['Got it', 'Close', 'Dismiss', 'Maybe later', 'No thanks'].includes(t) || /^close/i.test(a)) {
      b.click(); hit.push(t || a); } }
  return hit.join('|'); })()"""


def looks_rendered(png: Path) -> bool:
    """A rendered page has many colours; a blank or error page has a handful."""
    from PIL import Image

    with Image.open(png) as im:
        colours = im.convert("RGB").resize((200, 130)).getcolors(maxcolors=100000) or []
    return len(colours) > 30


def pick(client, defender: str):
    """The experiment, the defender's newest finished stage run and a per-epoch metric of it."""
    exp = client.get_experiment_by_name("advgame")
    if exp is None:
        raise SystemExit("ui-check: the store has no 'advgame' experiment: run the pipeline first")
    runs = client.search_runs([exp.experiment_id], f"tags.`advgame.stage` = '{defender}' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    if not runs:
        raise SystemExit(f"ui-check: no finished run of stage '{defender}' in the store")
    run = runs[0]
    curves = [k for k in run.data.metrics if len(client.get_metric_history(run.info.run_id, k)) > 1]
    if not curves:
        raise SystemExit(f"ui-check: run {run.info.run_id} ({defender}) has no per-epoch metric")
    metric = "test_error" if "test_error" in curves else sorted(curves)[0]
    if not client.search_registered_models():
        raise SystemExit("ui-check: no registered models (the report stage registers them)")
    return exp, run, metric


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("uri", help="tracking URI: sqlite:///path/mlflow.db or http://127.0.0.1:PORT")
    ap.add_argument("--out", default="docs")
    ap.add_argument("--defender", default="baseline")
    a = ap.parse_args(argv)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=a.uri)
    exp, run, metric = pick(client, a.defender)
    proc = None
    if a.uri.startswith("http"):
        base = a.uri.rstrip("/")
    else:
        port = free_port()
        base = f"http://{HOST}:{port}"
        proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", a.uri,
                                 "--host", HOST, "--port", str(port), "--workers", "1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        wait_ready(base, proc) if proc else None
        eid, rid = exp.experiment_id, run.info.run_id
        pages = {  # file: (page, what it shows once loaded, script then run, what it then shows)
            "ui-runs.png": (f"{base}/#/experiments/{eid}/runs", "pipeline", EXPAND, ""),
            "ui-metric.png": (f"{base}/#/experiments/{eid}/runs/{rid}/model-metrics", "Model metrics",
                              f"{SEARCH}({json.dumps(metric)})", metric),
            "ui-models.png": (f"{base}/#/models", "advgame-", "", ""),
        }
        browser = Browser()
        try:
            for name, (url, ready, then, shows) in pages.items():
                browser.shot(url, out / name, ready, then=then, shows=shows)
                print(f"ui-check: {out / name}  <- {url} ({a.defender}: {metric})")
        finally:
            browser.close()
    finally:
        if proc is not None:
            import os
            import signal

            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    t = time.monotonic()
    main()
    print(f"ui-check: done in {time.monotonic() - t:.0f}s")
