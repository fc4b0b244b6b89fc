"""Extraction on hostile input: time against input size (issue #12).

For each hostile shape below, at 10 KB, 100 KB, 1 MB and 5 MB (10^4 ... 5*10^6
bytes of mail), a child process times `extract()` on it and, in the same
child on the same bytes, the baseline: the standard library parsing the mail
and decoding every part (`email.message_from_bytes`, `get_payload(decode=True)`),
which is linear. Extraction's own 1.5 s budget is turned off in the child, so
the figure is the cost of reading the whole input: what the daemon's worker
would otherwise have to stop.

Shapes "spread" put the hostile text in parts of 100 KB (each ending in a
5.7.511 rejection line), so every byte is read and linear work gives a
constant time per MB; "single" is one text/plain body as the issue sent it
(the per-part caps of `extraction/limits.py` read its first 400,000
characters, so its time levels off). Printed per shape: the times, the time
per MB, the ratio to the baseline, and t(5 MB) / t(1 MB) / 5 (1 for linear
growth, 5 for quadratic). A measurement is stopped after `--timeout` seconds
(shown as "> T", null in the JSON) and the larger sizes of that shape are not
run. The last line is one JSON object of the figures.

Usage: .venv/bin/python bench/extraction_scaling.py [--timeout 60] [--shapes a,b] [--sizes 10000,...]
"""

from __future__ import annotations

import argparse
import email
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile import SHAPES, build

ROOT = Path(__file__).resolve().parents[1]
SIZES = (10_000, 100_000, 1_000_000, 5_000_000)
def _baseline(raw: bytes) -> None:
    msg = email.message_from_bytes(raw)
    for p in msg.walk():
        payload = p.get_payload(decode=True)
        if isinstance(payload, bytes):
            payload.decode("latin-1")


def child(shape: str, size: int, spread: bool) -> None:
    sys.path.insert(0, str(ROOT))
    from mailbot.extraction import extract, limits

    # The soft budget stops between stages; turned off, the time is the whole input's cost.
    limits.Budget.expired = lambda self: False  # type: ignore[method-assign]
    raw = build(shape, size, spread)
    best, base, runs, spent = float("inf"), float("inf"), 0, 0.0
    while runs < 5 and (runs == 0 or spent < 1.0):
        t0 = time.perf_counter()
        _baseline(raw)
        t1 = time.perf_counter()
        found = extract(raw)
        t2 = time.perf_counter()
        base, best = min(base, t1 - t0), min(best, t2 - t1)
        runs, spent = runs + 1, spent + t2 - t0
    print(json.dumps({"seconds": best, "baseline": base, "bytes": len(raw), "status": found.status,
                      "findings": len(found.findings), "runs": runs}))


def measure(shape: str, size: int, spread: bool, timeout: float) -> dict[str, float] | None:
    cmd = [sys.executable, __file__, "--child", shape, str(size), "spread" if spread else "single"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as e:
        sys.exit(f"{shape} at {size}: child failed\n{e.stderr}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def _fmt(t: float | None, timeout: float) -> str:
    return f"> {timeout:.0f} s" if t is None else f"{t:.3f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds before a measurement is stopped")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated shape names")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated sizes in bytes")
    args = ap.parse_args()
    if args.child:
        shape, size, form = args.child
        child(shape, int(size), form == "spread")
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [("a-run", False)] + [(s, True) for s in args.shapes.split(",")]
    header = f"{'shape':22}" + "".join(f"{_label(s):>11}" for s in sizes)
    print(f"extract() with its budget off; in brackets: time / stdlib parse+decode of the same bytes\n{header}"
          f"{'s per MB':>18}{'t5/t1/5':>9}")
    figures: dict[str, dict[str, object]] = {}
    for shape, spread in runs:
        name = f"{shape} ({'spread' if spread else 'single'})"
        times: list[float | None] = []
        ratios: list[float | None] = []
        for size in sizes:
            r = None if times and times[-1] is None else measure(shape, size, spread, args.timeout)
            times.append(None if r is None else r["seconds"])
            ratios.append(None if r is None else r["seconds"] / max(r["baseline"], 1e-9))
        per_mb = [None if t is None else t / (s / 1e6) for t, s in zip(times, sizes, strict=True)]
        growth = _growth(sizes, times)
        figures[name] = {"seconds": times, "seconds_per_mb": per_mb, "vs_baseline": ratios, "t5_t1_5": growth}
        row = f"{name:22}" + "".join(f"{_fmt(t, args.timeout):>11}" for t in times)
        tail = " / ".join("-" if p is None else f"{p:.3f}" for p in per_mb[-2:])
        print(row + f"{tail:>18}{'-' if growth is None else f'{growth:.2f}':>9}")
        print(f"{'':22}" + "".join(f"{'' if q is None else f'[{q:.1f}x]':>11}" for q in ratios))
    growths = [v["t5_t1_5"] for v in figures.values() if isinstance(v["t5_t1_5"], float)]
    summary = {"sizes": sizes, "timeout": args.timeout, "shapes": figures,
               "worst_t5_t1_5": max(growths) if growths else None,
               "timed_out": sorted(k for k, v in figures.items() if None in v["seconds"])}  # type: ignore[operator]
    print(f"worst t(5 MB)/t(1 MB)/5: {summary['worst_t5_t1_5']}; timed out: {summary['timed_out'] or 'none'}")
    print(json.dumps(summary, sort_keys=True))


def _label(size: int) -> str:
    return f"{size // 1_000_000} MB" if size >= 1_000_000 else f"{size // 1000} KB"


def _growth(sizes: list[int], times: list[float | None]) -> float | None:
    if 1_000_000 not in sizes or 5_000_000 not in sizes:
        return None
    t1, t5 = times[sizes.index(1_000_000)], times[sizes.index(5_000_000)]
    return None if t1 is None or t5 is None else round(t5 / t1 / 5, 2)


if __name__ == "__main__":
    main()
