"""The chaos and fuzz suite's figures (issue 19): what was checked, and how much of it.

Each scenario is the function its test calls, so a figure here and a pass there come
from the same code:
- linearizable writes and watches (tests/chaos/test_linearizable_writes.py): writes
  acknowledged and present, operations of unknown outcome, the linearizability verdict,
  watch events expected (etcd's own history) and delivered, relists, 5xx seen;
- every other module under tests/chaos/ that defines `figures() -> dict` (churn,
  partition, pressure, flaky paths: leftovers per node, ...), imported if present; for
  the churn, convergence after each kill (n, p50, p99, max; by kind of component) and
  once the killing stopped;
- the fuzz targets (tests/fuzz/): examples tried per target, read from hypothesis'
  statistics of a run with a fixed example count, and whether any 5xx was seen.

Run: .venv/bin/python -m bench.chaos [--seconds 60] [--fuzz-examples 300] [--skip-fuzz]
     [--skip-writes] [--only churn_run]   (the issue's full churn: MINIK8S_CHAOS_PODS=500
     .venv/bin/python -m bench.chaos --seconds 180 --skip-writes --skip-fuzz --only churn_run)
Takes about the chaos time plus a minute per sibling scenario and a few minutes of fuzz.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tests.chaos  # noqa: E402
from tests.chaos import test_linearizable_writes as writes  # noqa: E402


def show(title: str, figures: dict[str, object], seconds: float) -> None:
    print(f"\n{title}  ({seconds:.0f} s)")
    for name, value in figures.items():
        print(f"  {name:<44} {value}")


def show_convergence(figures: dict[str, object]) -> None:
    """The churn's convergence: p50 and p99 over one sample per kill, and after the last."""
    after = figures["convergence_after_kills"]
    assert isinstance(after, dict)
    print(f"  convergence after each kill: n={after['n']}  p50={after['p50']} s  p99={after['p99']} s"
          f"  max={after['max']} s")
    by_kind = figures.get("convergence_after_kill_by_kind") or {}
    assert isinstance(by_kind, dict)
    for kind, s in by_kind.items():
        print(f"    {kind:<20} n={s['n']}  p50={s['p50']} s  p99={s['p99']} s")
    print(f"  convergence once the killing stopped: {figures.get('convergence_seconds')} s")


def sibling_scenarios() -> list[str]:
    """Modules of tests/chaos/ other than the writes scenario that offer figures()."""
    names = []
    for info in pkgutil.iter_modules(tests.chaos.__path__):
        if info.name in ("test_linearizable_writes", "linearizability", "test_linearizability_checker"):
            continue
        if info.name.startswith("test_") or info.name.endswith("_run"):
            names.append(f"tests.chaos.{info.name}")
    return sorted(names)


STAT_TEST = re.compile(r"^(tests/\S+::\S+):$")
STAT_COUNT = re.compile(r"- (\d+) passing, (\d+) failing, and (\d+) invalid")


def examples_per_target(statistics: str) -> dict[str, int]:
    """Examples tried per test (passing + failing) from --hypothesis-show-statistics."""
    out: dict[str, int] = {}
    current = None
    for line in statistics.splitlines():
        if m := STAT_TEST.match(line.strip()):
            current = m.group(1).split("::", 1)[1]
        elif (m := STAT_COUNT.search(line)) and current:
            out[current] = out.get(current, 0) + int(m.group(1)) + int(m.group(2))
    return out


def fuzz_figures(examples: int) -> tuple[dict[str, object], bool]:
    """Run tests/fuzz with a fixed example count; examples tried per target (passing +
    failing, as hypothesis counts them) and whether pytest passed (a 5xx fails it)."""
    env = dict(os.environ, MINIK8S_FUZZ_EXAMPLES=str(examples), PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", "tests/fuzz"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    out: dict[str, object] = dict(examples_per_target(proc.stdout))
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    out["pytest"] = summary
    return out, proc.returncode == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=writes.chaos_seconds(60.0),
                   help="length of each chaos run (default $MINIK8S_CHAOS_SECONDS or 60)")
    p.add_argument("--fuzz-examples", type=int, default=300, help="hypothesis examples per fuzz target")
    p.add_argument("--skip-fuzz", action="store_true")
    p.add_argument("--skip-siblings", action="store_true")
    p.add_argument("--skip-writes", action="store_true", help="skip the linearizable writes run")
    p.add_argument("--only", action="append", default=[], metavar="MODULE",
                   help="run only these sibling scenarios (e.g. churn_run; repeatable)")
    args = p.parse_args()
    os.environ["MINIK8S_CHAOS_SECONDS"] = str(args.seconds)

    if not args.skip_writes:
        t = time.monotonic()
        show("linearizable writes and watches under etcd restarts and API server kill -9",
             writes.figures(writes.run_writes_under_faults(args.seconds)), time.monotonic() - t)
    if not args.skip_siblings:
        for name in sibling_scenarios():
            if args.only and name.rsplit(".", 1)[1] not in args.only:
                continue
            module = importlib.import_module(name)
            if callable(getattr(module, "figures", None)):
                t = time.monotonic()
                figures = module.figures()
                show(name.rsplit(".", 1)[1], figures, time.monotonic() - t)
                if "convergence_after_kills" in figures:
                    show_convergence(figures)
    if not args.skip_fuzz:
        t = time.monotonic()
        figures, ok = fuzz_figures(args.fuzz_examples)
        figures["5xx seen (fails the run)"] = "none" if ok else "see pytest's output"
        show(f"fuzz (tests/fuzz, {args.fuzz_examples} examples per hypothesis target)", figures,
             time.monotonic() - t)
    return 0


if __name__ == "__main__":
    sys.exit(main())
