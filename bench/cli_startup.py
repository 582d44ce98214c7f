"""How long `campaignflow --help` takes, against `python -c pass` in the same run.

Run: .venv/bin/python bench/cli_startup.py   (target: --help under 0.5 s)
Ends with a JSON line: {"help_s": ..., "python_s": ..., "ratio": ...}.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

RUNS = 15


def median_seconds(args: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    python = median_seconds([sys.executable, "-c", "pass"])
    help_ = median_seconds([sys.executable, "-m", "campaignflow", "--help"])
    validate = median_seconds([sys.executable, "-m", "campaignflow", "validate", "examples/b2b-webinar.yaml"])
    print(f"python -c pass            {python * 1000:7.1f} ms (median of {RUNS})")
    print(f"campaignflow --help       {help_ * 1000:7.1f} ms  target < 500 ms")
    print(f"campaignflow validate     {validate * 1000:7.1f} ms")
    print(json.dumps({"help_s": round(help_, 4), "python_s": round(python, 4), "validate_s": round(validate, 4),
                      "ratio": round(help_ / python, 2), "target_met": help_ < 0.5}))


if __name__ == "__main__":
    main()
