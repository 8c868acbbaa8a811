"""A real headless browser for the report's tests, with no Python package beyond the standard
library: Chromium (Debian's ``chromium``) driven over the Chrome DevTools Protocol on a pipe
(``--remote-debugging-pipe``: JSON messages ended by NUL, commands on fd 3, replies and events on
fd 4). It opens a page from disk, loads every image (lazy ones too, by scrolling and then making
them eager), and tells which images did not load, what the console and the network reported as
errors, and takes screenshots.

By hand, the README's screenshots (1280 px wide)::

    python tests/browser.py cnn-demo/index.html docs/img/report_top.png
    python tests/browser.py cnn-demo/index.html docs/img/report_layer.png '#layer-2'
"""

from __future__ import annotations

import json
import os
import fcntl
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH, HEIGHT = 1280, 900


def find_browser() -> str | None:
    """The Chromium-family browser on PATH (CNNCLI_BROWSER names another), or None."""
    named = os.environ.get("CNNCLI_BROWSER")
    if named:
        return shutil.which(named) or (named if os.access(named, os.X_OK) else None)
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page (``with Browser() as b: b.open(path)``)."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_browser()
        if self.executable is None:
            raise BrowserError("no Chromium on PATH")
        self.timeout, self.next_id, self.events, self.buffer = timeout, 0, [], b""
        self.profile = tempfile.mkdtemp(prefix="cnncli-browser-")
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        args = [self.executable, "--headless", "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--hide-scrollbars", "--mute-audio", f"--window-size={WIDTH},{HEIGHT}", "about:blank"]
        # the child's fd 3 reads our commands, its fd 4 writes the replies: posix_spawn's dup2 (thread-safe,
        # unlike a preexec_fn) from fds above 4, so the copies are inheritable whatever numbers the pipes got
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                   (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
                   (os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4)]
        self.pid = os.posix_spawn(self.executable, args, os.environ, file_actions=actions)
        for fd in (to_chrome_r, from_chrome_w, *high):
            os.close(fd)
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)

    # ------------------------------------------------------------------ protocol
    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_chrome], [], [], left)[0]:
                raise BrowserError("the browser did not answer in time")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise BrowserError("the browser closed its pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["method"] == method:
                    return self.events.pop(i)
            self.events.append(self._read(deadline))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    # ------------------------------------------------------------------ the page
    def open(self, page: Path) -> None:
        self.call("Page.navigate", session=True, url=Path(page).resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def load_all_images(self) -> list[dict]:
        """Scroll through the page (lazy images load as they come near), make every image eager,
        wait until each is complete; per image: src, whether it loaded (naturalWidth > 0), size."""
        height = self.evaluate("document.documentElement.scrollHeight")
        for y in range(0, int(height) + HEIGHT, HEIGHT):
            self.evaluate(f"window.scrollTo(0, {y})")
        return self.evaluate("""(async () => {
            const imgs = [...document.images];
            imgs.forEach(i => { i.loading = 'eager'; });
            for (let t = 0; t < 300 && !imgs.every(i => i.complete); t++) await new Promise(r => setTimeout(r, 50));
            await Promise.all(imgs.map(i => i.decode().catch(() => null)));
            window.scrollTo(0, 0);
            return imgs.map(i => ({src: i.getAttribute('src'), loading: i.getAttribute('loading'),
                                   loaded: i.complete && i.naturalWidth > 0, width: i.naturalWidth,
                                   height: i.naturalHeight}));
        })()""")

    def errors(self) -> list[str]:
        """What the console, the page's scripts and the network reported as errors so far."""
        while True:  # drain what has arrived
            import select

            if b"\0" not in self.buffer and not select.select([self.from_chrome], [], [], 0.2)[0]:
                break
            self.events.append(self._read(time.monotonic() + self.timeout))
        out = []
        for ev in self.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                out.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed":
                out.append(f"network: {p.get('errorText')} ({p.get('type')})")
        return out

    def screenshot(self, path: Path, at: str | None = None) -> Path:
        """A PNG of the viewport (1280 px wide), at the top or with the element ``at`` (a CSS selector) on top."""
        import base64

        if at is not None:
            self.evaluate(f"document.querySelector({json.dumps(at)}).scrollIntoView()")
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (BrowserError, OSError):
            pass
        for _ in range(100):  # up to 10 s to leave by itself, then killed
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        for fd in (self.to_chrome, self.from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    page, png, *where = sys.argv[1:]
    with Browser() as b:
        b.open(Path(page))
        b.load_all_images()
        b.screenshot(Path(png), where[0] if where else None)
        print("\n".join(b.errors()) or "no errors", file=sys.stderr)
