"""Z-order proof for issue 5: skip fractions of a Z-ordered W1 table, from the log's stats.

Usage (the venv of .ci/run has deltalake; ../shared/bench holds the workload definitions):

    target/release/workloads --root /tmp/zp --scale 1.0 --only W1
    cp -r /tmp/zp/w1 /tmp/zp/w1_delta
    target/release/shoal optimize /tmp/zp/w1 --zorder-by user_id,ts --target-size 900000 --full
    python tests/scripts/zorder_proof.py shoal /tmp/zp/w1
    python tests/scripts/zorder_proof.py delta-rs-zorder /tmp/zp/w1_delta 900000

(900000 bytes: W1's 91 MB of files make at least 100 Z-ordered files.)

Both tables are measured the same way: for the 100 W5 lookup values, the fraction of files
whose user_id [min, max] excludes the value; for 100 random ts ranges of 0.1% of the
domain, the fraction of files whose ts [min, max] does not overlap the range.
"""
import json
import sys
import time

sys.path.insert(0, "../shared/bench")
import delta_rs_bench as b  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
from deltalake import DeltaTable  # noqa: E402


def seconds(values):
    return np.array([v.timestamp() if hasattr(v, "timestamp") else v for v in values], dtype=float)


def skip_stats(path):
    a = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pydict()
    umin, umax = np.array(a["min.user_id"]), np.array(a["max.user_id"])
    tmin, tmax = seconds(a["min.ts"]), seconds(a["max.ts"])
    u_skip = np.mean([np.mean((umin > x) | (umax < x)) for x in b.lookup_user_ids(100)])
    lo, hi = tmin.min(), tmax.max()
    width = (hi - lo) / 1000.0
    starts = np.random.default_rng(7).uniform(lo, hi - width, 100)
    t_skip = np.mean([np.mean((tmin > s + width) | (tmax < s)) for s in starts])
    return len(umin), float(u_skip), float(t_skip)


def main():
    which, path = sys.argv[1], sys.argv[2]
    if which == "delta-rs-zorder":
        started = time.time()
        DeltaTable(path).optimize.z_order(["user_id", "ts"], target_size=int(sys.argv[3]),
                                          writer_properties=b.ZSTD)
        print("delta-rs z-order seconds", round(time.time() - started, 2))
    files, user_skip, ts_skip = skip_stats(path)
    print(json.dumps({"table": which, "files": files, "user_id_point_skip": round(user_skip, 4),
                      "ts_narrow_range_skip": round(ts_skip, 4)}))


if __name__ == "__main__":
    main()
