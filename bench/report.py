"""Print the markdown tables of every run_bench.py result in ``bench/results`` (docs/benchmarks.md).

Usage::

    python bench/report.py [RESULTS_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from run_bench import markdown

BENCH_DIR = Path(__file__).resolve().parent


def main() -> None:
    """Command line entry point."""
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH_DIR / "results"
    for path in sorted(results.glob("*.json")):
        result = json.loads(path.read_text())
        if "nudgekit" not in result:  # not written by run_bench.py
            continue
        if "command" not in result:  # other benchmarks' results (ray_bench.py) have their own
            continue
        print(f"### {path.name}\n\n`{result['command']}`\n")
        print(markdown(result))
        print()


if __name__ == "__main__":
    main()
