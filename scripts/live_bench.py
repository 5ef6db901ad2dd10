"""The issue-36 figure: `posecast live examples/astronaut.png --audio examples/speech.wav
--serve 127.0.0.1:PORT` played in headless Chromium (Debian's `chromium`), with the server's
and the page's own figures printed as a table. Compare figures only within one run, on an
otherwise idle machine.

    .venv/bin/python scripts/live_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from browser import CHROMIUM, Browser  # noqa: E402


def one_run(profile: Path) -> dict:
    live = subprocess.Popen([sys.executable, "-m", "posecast", "live",
                             str(ROOT / "examples" / "astronaut.png"), "--audio",
                             str(ROOT / "examples" / "speech.wav"), "--serve", "127.0.0.1:0",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    page = live.stderr.readline().split()[1]
    browser = Browser(profile)
    try:
        browser.open(page)
        stdout, _ = live.communicate(timeout=120)
    finally:
        browser.close()
    return json.loads(stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    if CHROMIUM is None:
        sys.exit("live_bench.py: needs Chromium (apt-get install chromium)")
    print(f"{time.strftime('%Y-%m-%d')}, {subprocess.getoutput('nproc')} CPUs, {CHROMIUM}")
    print("run | frames | made late (held) | server p50 / p95 / max s | page shown | page "
          "dropped | page p50 / p95 / max s | A/V offset s")
    for run in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            summary = one_run(Path(folder) / "chromium")
        page = summary.get("page", {})
        print(f"{run + 1} | {summary['frames']} | {summary['frames_dropped']} | "
              f"{summary['latency_p50_s']} / {summary['latency_p95_s']} / "
              f"{summary['latency_max_s']} | {page.get('frames_shown')} | "
              f"{page.get('frames_dropped')} | {page.get('latency_p50_s')} / "
              f"{page.get('latency_p95_s')} / {page.get('latency_max_s')} | "
              f"{summary['av_offset_s']}")


if __name__ == "__main__":
    main()
