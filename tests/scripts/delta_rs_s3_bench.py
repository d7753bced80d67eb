"""delta-rs side of workloads W1-W3 with the tables on S3 (the test gateway).

Runs the shared benchmark script's own step functions (`delta_rs_bench.py` in the bench
directory, imported where it lies) with its table locations pointed at an `s3://` root,
so both sides run the same generator and the same measurements. Each step runs in its
own child process, as in the shared driver, so `peak_rss_mb` is per step.

    eval "$(tests/scripts/s3-gateway.sh env STATE)"
    python tests/scripts/delta_rs_s3_bench.py --bench-dir ../shared/bench \
        --root /tmp/delta-s3-state --tables s3://test/delta-bench --scale 0.1

S3 settings come from the AWS_* environment. Commits use the store's conditional put
(`AWS_CONDITIONAL_PUT=etag`: `If-None-Match: *`), the same mechanism Shoal uses, so
the two sides pay the same price for a commit. The tables root must not hold tables
yet: pass a fresh prefix per run.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

STEPS = ["W1", "W2", "W3"]


def load_bench(bench_dir: Path):
    spec = importlib.util.spec_from_file_location("delta_rs_bench", bench_dir / "delta_rs_bench.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"no delta_rs_bench.py in {bench_dir}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_step(args: argparse.Namespace) -> int:
    os.environ.setdefault("AWS_ALLOW_HTTP", "true")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    os.environ.setdefault("AWS_CONDITIONAL_PUT", "etag")
    bench = load_bench(args.bench_dir)
    tables = args.tables.rstrip("/")
    bench.Config.table = lambda self, name: f"{tables}/{name}"
    cfg = bench.Config(root=args.root, scale=args.scale)
    cfg.root.mkdir(parents=True, exist_ok=True)
    bench.STEPS[args.step](cfg)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-dir", type=Path, required=True, help="directory holding delta_rs_bench.py")
    parser.add_argument("--root", type=Path, required=True, help="local directory for the state file")
    parser.add_argument("--tables", required=True, help="s3:// root for the tables (fresh)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default=",".join(STEPS))
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return run_step(args)
    failures = 0
    for step in [s.strip() for s in args.only.split(",") if s.strip()]:
        if step not in STEPS:
            print(f"unknown step {step}; known: {', '.join(STEPS)}", file=sys.stderr)
            return 2
        cmd = [sys.executable, __file__, "--bench-dir", str(args.bench_dir), "--root", str(args.root),
               "--tables", args.tables, "--scale", str(args.scale), "--step", step]  # fmt: skip
        failures += subprocess.run(cmd).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
