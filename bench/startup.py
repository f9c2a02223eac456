"""Start-up time of the ``vault`` command, against a bare ``python -c pass`` measured
in the same run (so the machine's speed and load cancel out).

    python -m bench.startup [--repeat 7] [--json PATH]

Each command runs as a fresh process (``sys.executable``, this tree on
PYTHONPATH, a temporary VAULT_HOME with no vault in it), interleaved
repetition by repetition; the table gives the fastest run (the least disturbed
by other processes) and the median, in milliseconds, and the excess over
``python -c pass``. ``import vault`` loads nothing heavy (the package loads its
names on first use); ``from vault import Vault`` is the whole library, for
comparison. Measure where the time goes with
``python -X importtime -m vault.cli --help 2> imports.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["COMMANDS", "main", "measure"]

REPO = Path(__file__).resolve().parents[1]

#: (label, arguments after the interpreter)
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("python -c pass", ("-c", "pass")),
    ("import vault", ("-c", "import vault")),
    ("vault --version", ("-m", "vault.cli", "--version")),
    ("vault --help", ("-m", "vault.cli", "--help")),
    ("vault keys --help", ("-m", "vault.cli", "keys", "--help")),
    ("vault audit report --help", ("-m", "vault.cli", "audit", "report", "--help")),
    ("from vault import Vault (whole library)", ("-c", "from vault import Vault")),
)


def _run_once(args: tuple[str, ...], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, check=False,
                          timeout=120)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.decode()[-500:]}")
    return elapsed


def measure(repeat: int) -> list[dict[str, float | str]]:
    """Every command ``repeat`` times, interleaved; milliseconds."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
        env.update(PYTHONPATH=str(REPO), VAULT_HOME=home, COLUMNS="80")
        times: dict[str, list[float]] = {label: [] for label, _ in COMMANDS}
        for _label, args in COMMANDS:  # warm the file cache and the bytecode once
            _run_once(args, env)
        for _ in range(repeat):
            for label, args in COMMANDS:
                times[label].append(_run_once(args, env) * 1000)
    floor = min(times[COMMANDS[0][0]])
    return [{"command": label, "fastest_ms": round(min(t), 1),
             "median_ms": round(statistics.median(t), 1),
             "over_python_ms": round(min(t) - floor, 1)} for label, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7, help="runs of each command")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    rows = measure(args.repeat)
    width = max(len(str(r["command"])) for r in rows)
    print(f"{'command':<{width}}  fastest ms  median ms  over python -c pass")
    for r in rows:
        print(f"{r['command']!s:<{width}}  {r['fastest_ms']:>10}  {r['median_ms']:>9}  "
              f"{r['over_python_ms']:>10}")
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} cores, load "
          f"{os.getloadavg()[0]:.1f}, {args.repeat} runs each)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
