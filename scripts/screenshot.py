"""Take docs/dashboard.png from the real demo stack: `syncguard up`, a few minutes, chromium.

Run from the project root (needs Debian's chromium: `make browser`)::

    .venv/bin/python scripts/screenshot.py [--minutes 4] [--out docs/dashboard.png] [--log FILE]

It starts ``syncguard up`` with the demo on free ports and a fresh home (so fresh embedded
servers, stopped again at the end), lets the demo run, logs in to the dashboard with the
development operator key ``up`` minted, and writes a full-page PNG. What the page shows is
what a newcomer sees after ``make run``: the demo's four stores, the flaky store's open
circuit and archived job, the throttled store's deferrals, the metric trends so far.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from providers.emulator.runner import free_port  # noqa: E402
from syncguard.cli.credentials import OPERATOR_KEY_FILE  # noqa: E402
from tests.api.test_dashboard_browser import CHROMIUM, FLAGS, TIMEOUT_S, Page, log_in  # noqa: E402

#: How long the stack may take to answer /healthz, seconds.
START_TIMEOUT_S = 180.0


def main() -> None:
    """Parse the arguments, run the stack, take the screenshot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="demo run before the shot")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--log", type=Path, default=None, help="keep the stack's log here")
    parser.add_argument("--verbose", action="store_true", help="run `syncguard -v up`")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="syncguard-screenshot-"))
    log_path = args.log or home / "up.log"
    with running_stack(home, log_path, args.verbose) as api_url:
        print(f"stack up at {api_url}; demo runs {args.minutes} min (log: {log_path})")
        time.sleep(args.minutes * 60)
        key = (home / OPERATOR_KEY_FILE).read_text().strip()
        with browser() as page:
            log_in(page, api_url, key)
            page.wait_for("document.querySelectorAll('svg.trend polyline').length >= 1")
            page.screenshot(args.out)
    print(f"wrote {args.out}")


@contextmanager
def running_stack(home: Path, log_path: Path, verbose: bool) -> Iterator[str]:
    """``syncguard up`` with the demo, on free ports under ``home``; yields the API's URL."""
    ports = {name: str(free_port()) for name in ("API", "FLOWER", "EMULATOR")}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("BROKER_URL", None)
    env.update({f"SYNCGUARD_{name}_PORT": port for name, port in ports.items()})
    env.update(SYNCGUARD_HOME=str(home), SYNCGUARD_ENVIRONMENT="development")
    argv = [str(Path(sys.executable).with_name("syncguard")), *(["-v"] if verbose else []), "up"]
    api_url = f"http://127.0.0.1:{ports['API']}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        _wait_until_healthy(api_url, proc, home)
        yield api_url
    finally:
        proc.send_signal(signal.SIGINT)  # up stops its children, then the servers it started
        proc.wait(120)


def _wait_until_healthy(api_url: str, proc: subprocess.Popen[bytes], home: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"syncguard up exited with {proc.returncode}")
        try:
            healthy = httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            healthy = False
        if healthy and (home / OPERATOR_KEY_FILE).is_file():
            return
        time.sleep(0.5)
    raise SystemExit(f"the API at {api_url} did not answer within {START_TIMEOUT_S}s")


@contextmanager
def browser() -> Iterator[Page]:
    """Headless Debian chromium on a fresh profile, one page driven over DevTools."""
    binary = shutil.which(CHROMIUM)
    if binary is None:
        raise SystemExit(f"{CHROMIUM} not found: `make browser` installs Debian's chromium")
    profile = Path(tempfile.mkdtemp(prefix="syncguard-chromium-"))
    argv = [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT_S
        while not port_file.is_file() or not port_file.read_text().strip():
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Page", "Log"):
            page.send(f"{domain}.enable")
        yield page
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
