"""How fast and how lean campaignflow refuses hostile specs, against validating the example spec in the same run.

Before issue 13 a 50 MB spec took 230 s and 4.7 GB before it failed; now the size limit refuses it before the
file is read. Each case (and the largest valid spec) is `campaignflow validate FILE` in a child process, timed, with its peak memory.

Run: .venv/bin/python bench/bad_input.py
Ends with a JSON line: {"example_s": ..., "cases": {name: {"s": ..., "peak_mb": ..., "ratio": ...}}}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "b2b-webinar.yaml"


# The CLI in a child that reports its own peak memory on its last line of stderr.
CHILD = """import resource, sys
from campaignflow.app.cli import main
sys.argv = ["campaignflow", "validate", sys.argv[1]]
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code or 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def validate(path: Path) -> tuple[float, float, int]:
    """Seconds, peak MB and exit code of `campaignflow validate path` in a fresh process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return seconds, int(done.stderr.split()[-1]) / 1024, done.returncode


def hostile_files(folder: Path) -> dict[str, Path]:
    text = EXAMPLE.read_text()
    files = {
        "50 MB spec": text + "\nnotes: |\n" + ("  " + "x" * 98 + "\n") * 500_000,
        "valid spec just under 1 MB": text + ("# " + "x" * 98 + "\n") * 9_500,  # the largest a spec may be
        "nesting 10,000 deep": text + "\nnotes: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "billion laughs": "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)),
        "duplicate keys": text + "\ncurrency: USD\n",
    }
    out = {}
    for name, body in files.items():
        out[name] = folder / (name.replace(" ", "-").replace(",", "") + ".yaml")
        out[name].write_text(body)
    return out


def main() -> None:
    example_s = min(validate(EXAMPLE)[0] for _ in range(3))
    print(f"validate the example spec        {example_s:6.2f} s (best of 3; the baseline)")
    cases = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in hostile_files(Path(tmp)).items():
            seconds, peak, code = validate(path)
            cases[name] = {"s": round(seconds, 3), "peak_mb": round(peak), "exit": code,
                           "ratio": round(seconds / example_s, 2)}
            print(f"{name:<32} {seconds:6.2f} s  {seconds / example_s:5.2f}x  {peak:5.0f} MB  exit {code}")
    print(json.dumps({"example_s": round(example_s, 3), "cases": cases}))


if __name__ == "__main__":
    main()
