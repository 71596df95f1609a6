"""batchq's performance targets, each measured against a baseline taken in the same run.

    .venv/bin/python bench/bench.py                  # full scale, up to ~15 minutes
    .venv/bin/python bench/bench.py --quick          # 1/10 scale, a few minutes
    .venv/bin/python bench/bench.py --only submit,status --json out.json

Starts an embedded Valkey in a temp dir, the simulator and worker processes as needed, and
prints one row per figure: the target, what was measured, the baseline, their ratio and whether
the target is met. Targets: submit, memory, status, export, queue, saturation, scaling,
dispatch, dispatch-cost, fairness (see bench/_targets.py), models (bench/_models.py), auto
(bench/_auto.py), embed (bench/_embed.py), openai-api (bench/_api.py). The machine is shared
and small, so absolute figures are noisy; the ratios compare things measured minutes apart on
the same box.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _fixtures import Ctx, Row
from _harness import Lab, machine_info
from _targets import NUMBERS, TARGETS

COLUMNS = ("#", "target", "goal", "measured", "baseline (same run)", "ratio", "verdict")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1/10 scale (a few minutes)")
    ap.add_argument("--only", metavar="NAME[,NAME]", help="targets: " + ", ".join(TARGETS))
    ap.add_argument("--json", metavar="FILE", help="also write the table as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, Valkey data)")
    args = ap.parse_args(argv)
    names = list(TARGETS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in TARGETS]
        if unknown:
            ap.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
        names = [n for n in TARGETS if n in wanted]  # run in dependency order
    args.names = names
    return args


def render(rows: list[Row]) -> str:
    cells = [COLUMNS] + [
        (str(r.num), r.target, r.goal, r.measured, r.baseline, r.ratio, r.verdict) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{r.num}  {r.target}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([sys.executable, *sys.argv])
    machine = machine_info()
    header = [
        f"batchq bench — {'quick (1/10 scale)' if args.quick else 'full scale'}",
        f"command: {command}",
        f"machine: nproc {machine['nproc']}, CPU {machine['cpu']}, Python {machine['python']}"
        f" ({machine['platform']})",
        "Redis: embedded Valkey (AOF everysec); Ollama: batchq's simulator (simulated answers)",
    ]
    print("\n".join(header), flush=True)

    root = Path(tempfile.mkdtemp(prefix="batchq-bench-"))
    t0 = time.perf_counter()
    lab = Lab(root)
    ctx = Ctx(lab, quick=args.quick)
    try:
        for name in args.names:
            ctx.log(f"== {name}")
            try:
                TARGETS[name](ctx)
            except Exception as e:  # report it and go on with the other targets
                ctx.log(f"{name} failed: {type(e).__name__}: {e}")
                ctx.add(
                    Row(NUMBERS[name], name, "", f"error: {type(e).__name__}: {e}", "", "", "error")
                )
    finally:
        lab.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - t0

    rows = sorted(ctx.rows, key=lambda r: r.num)
    print()
    print(render(rows))
    missed = [r.target for r in rows if r.verdict in ("misses", "error")]
    print(f"\nwall time {wall:.0f} s; {len(missed)} of {len(rows)} rows miss or failed")
    if args.json:
        doc = {
            "command": command,
            "machine": machine,
            "scale": ctx.scale,
            "wall_s": wall,
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
