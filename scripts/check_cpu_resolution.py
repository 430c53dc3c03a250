"""What pip installs for README.md's torch step on an ordinary Linux machine, without installing or downloading it.

    python scripts/check_cpu_resolution.py [--pypi-only]

Runs README's `pip install ... torch...` step as `pip install --dry-run --report` with `--isolated` and
PIP_CONFIG_FILE=/dev/null, so no local wheel folder or machine-wide pip configuration takes part (only package
metadata is fetched). Prints torch's resolved version and any nvidia-* packages. Exit 0: the CPU build; 1: a CUDA
build; 77: an index could not be reached (offline). `--pypi-only` resolves the same pin from PyPI alone, which
shows what a plain `pip install torch==...` gets (the CUDA build, on Linux x86_64).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]


def readme_torch_step() -> list[str]:
    """The arguments of the README's `pip install` that installs torch (the first command of "Set up")."""
    for line in (REPO / "README.md").read_text().splitlines():
        for step in line.split("&&"):
            m = re.search(r"pip install (.*\btorch==.*)", step)
            if m and "download.pytorch.org/whl/cpu" in step:
                return shlex.split(m.group(1).split("#")[0])
    raise SystemExit("README.md has no `pip install ... torch==... download.pytorch.org/whl/cpu` step")


def reachable(url: str, timeout_s: float = 5.0) -> bool:
    host = urlsplit(url).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def resolve(args: list[str]) -> dict[str, str]:
    """{package: version} that pip would install for `args` on this platform, from a dry run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    with tempfile.TemporaryDirectory() as d:
        report = Path(d) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check",
               "--report", str(report), *args]
        subprocess.run(cmd, env=env, check=True, timeout=600)
        data = json.loads(report.read_text())
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in data["install"]}


def main(argv: list[str]) -> int:
    args = readme_torch_step()
    if "--pypi-only" in argv:
        args = [a for a in args if a.startswith("torch==")]
    urls = [a for a in args if a.startswith("https://")] or ["https://pypi.org/simple"]
    if not all(reachable(u) for u in urls):
        print(f"offline: cannot reach {', '.join(urls)}", file=sys.stderr)
        return 77
    got = resolve(args)
    nvidia = sorted(n for n in got if n.startswith("nvidia-"))
    print(f"pip install {shlex.join(args)}  ->  torch {got.get('torch')}, {len(nvidia)} nvidia package(s)"
          + (f": {', '.join(nvidia)}" if nvidia else ""))
    cpu = got.get("torch", "").endswith("+cpu") or (got.get("torch") and not nvidia)
    return 0 if cpu else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
