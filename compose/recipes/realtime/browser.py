#!/usr/bin/env python3
"""Opens a page in headless Chromium and watches it through the DevTools
protocol (over --remote-debugging-pipe: no port, no WebSocket client, Python 3
standard library only). Used by the realtime recipe's test and to make the
screenshot in docs/img/realtime.png.

  browser.py --url 'file:///.../realtime.html?ws=ws://127.0.0.1:8080' \
      --ready 'window.walbus && window.walbus.subscribed' \
      --dom-out rows.json --stop-file stop --screenshot page.png

1. loads --url and waits until the JavaScript expression --ready is true,
   then prints "ready" on stdout;
2. every 200 ms evaluates --dom (default: the text of every cell of the
   page's #rows table, as JSON) and writes it to --dom-out when it changed;
3. when --stop-file exists (or after --timeout seconds), saves a PNG
   screenshot to --screenshot and exits 0 (1 on a timeout or a browser error).
Console messages of the page go to stderr.
"""

import argparse
import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

DEFAULT_DOM = ("JSON.stringify([...document.querySelectorAll('#rows tr')]"
               ".map(tr => [...tr.cells].map(td => td.textContent)))")


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, chromium, width, height):
        self.profile = tempfile.mkdtemp(prefix="walbus-chromium-")
        # Chromium reads commands from fd 3 and writes answers to fd 4.
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        args = [chromium, "--headless=new", "--remote-debugging-pipe", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={self.profile}", f"--window-size={width},{height}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # bash (dash takes one-digit fds only) puts the pipe ends on fds 3 and 4 and closes the originals
        # (moved to fds >= 10 first, so no redirection overwrites another).
        r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        wrapper = ["/bin/bash", "-c", f'exec "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-', "sh"]
        self.proc = subprocess.Popen(wrapper + args, pass_fds=(r, w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.profile, "chromium.log"), "wb"))
        os.close(r)
        os.close(w)
        self.buf = b""
        self.next_id = 0
        self.session = None
        self.events = []

    def send(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        want = self.next_id
        while True:
            m = self.read()
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.on_event(m)

    def read(self):
        while b"\0" not in self.buf:
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                log = open(os.path.join(self.profile, "chromium.log"), errors="replace").read()[-2000:]
                raise RuntimeError("Chromium closed the DevTools pipe (it exited); its log:\n" + log)
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def on_event(self, m):
        if m.get("method") == "Runtime.consoleAPICalled":
            args = m["params"].get("args", [])
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            print(f"console.{m['params'].get('type')}: {text}", file=sys.stderr, flush=True)
        elif m.get("method") == "Runtime.exceptionThrown":
            d = m["params"].get("exceptionDetails", {})
            print(f"page exception: {d.get('exception', {}).get('description', d.get('text'))}",
                  file=sys.stderr, flush=True)

    def open(self, url, width, height):
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target = page["targetId"] if page else self.send("Target.createTarget", {"url": "about:blank"},
                                                          session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.send("Runtime.enable")
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            return None
        return r.get("result", {}).get("value")

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--ready", default="document.readyState === 'complete'")
    ap.add_argument("--dom", default=DEFAULT_DOM, help="JavaScript expression whose value is written to --dom-out")
    ap.add_argument("--dom-out")
    ap.add_argument("--stop-file")
    ap.add_argument("--screenshot")
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=520)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--chromium", default=os.environ.get("CHROMIUM") or find_chromium())
    args = ap.parse_args()
    if not args.chromium:
        print("browser.py: Chromium not found: apt-get install chromium (or set CHROMIUM=/path)", file=sys.stderr)
        return 2

    b = Browser(args.chromium, args.width, args.height)
    code = 0
    try:
        b.open(args.url, args.width, args.height)
        deadline = time.monotonic() + args.timeout
        while not b.evaluate(args.ready):
            if time.monotonic() > deadline:
                print(f"browser.py: the page never became ready ({args.ready})", file=sys.stderr)
                return 1
            time.sleep(0.1)
        print("ready", flush=True)
        last = None
        while True:
            if args.dom_out:
                value = b.evaluate(args.dom)
                if value != last:
                    tmp = args.dom_out + ".tmp"
                    with open(tmp, "w") as f:
                        f.write(value if isinstance(value, str) else json.dumps(value))
                    os.replace(tmp, args.dom_out)
                    last = value
            if args.stop_file and os.path.exists(args.stop_file):
                break
            if time.monotonic() > deadline:
                print("browser.py: timed out before the stop file appeared", file=sys.stderr)
                code = 1
                break
            if not args.stop_file and not args.dom_out:
                break
            time.sleep(0.2)
        if args.screenshot:
            b.screenshot(args.screenshot)
            print(f"screenshot {args.screenshot}", flush=True)
        return code
    except (RuntimeError, OSError) as e:
        print(f"browser.py: {e}", file=sys.stderr)
        return 1
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
