"""What an idle worker process imports (issue 12, goal 8): every task module, and nothing a task
loads only when it calls out (the provider adapters and httpx) or that only other processes use
(the API, the emulator, the web framework)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Module prefixes an idle worker must not have loaded.
NOT_IDLE = (
    "httpx",
    "rich",
    "pygments",
    "fastapi",
    "starlette",
    "uvicorn",
    "api",
    "providers.emulator",
    "providers.gmail",
    "providers.outlook",
    "providers.oauth",
    "opentelemetry.exporter",
)
#: What a worker imports (celery -A tasks worker registers TASK_MODULES), then what it loaded.
PROBE = """
import importlib, json, sys
import tasks
for name in tasks.TASK_MODULES:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(probe: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    modules: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return modules


def _unwanted(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(f"{p}.") for p in NOT_IDLE)]


def test_an_idle_worker_loads_every_task_module_and_no_adapter() -> None:
    modules = _loaded(PROBE)

    assert "tasks.sync.pipeline" in modules and "tasks.webhooks" in modules
    assert _unwanted(modules) == []


def test_the_probe_sees_an_adapter_once_a_task_opens_one() -> None:
    # The same probe after what open_client imports: the check is not vacuous.
    modules = _loaded(PROBE.replace("print(", "import providers.gmail\nprint(", 1))

    assert {"httpx", "providers.gmail", "providers.oauth"} <= set(_unwanted(modules))
