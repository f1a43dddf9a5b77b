"""benchmarks/teds_bench.py's printed summary says of every figure whether it is CPU or wall time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "teds_bench.py"


def _bench():
    spec = importlib.util.spec_from_file_location("teds_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_labels_cpu_and_wall_figures():
    bench = _bench()
    figures = {
        "pubtabnet_20": {"speedup_cpu": 18.8, "speedup_wall": 15.0, "ours_cpu_s": 0.5, "baseline_cpu_s": 9.4,
                         "ours_wall_s": 0.7, "baseline_wall_s": 10.5, "ours_pool_wall_s": 1.2, "max_abs_diff": 0.0},
        "generated": {"1000": {"nested_cpu_s": 6.4, "nested_wall_s": 9.1, "pubtabnet_cpu_s": 5.9,
                               "pubtabnet_wall_s": 8.8}},
    }
    lines = bench.summary_lines(figures, {"a": True}, {"a": False})
    assert "CPU" in lines[0] and "wall" in lines[0]
    big = next(line for line in lines if "1,000-cell" in line)
    assert "nested 6.40 s CPU (9.10 s wall)" in big and "pubtabnet 5.90 s CPU (8.80 s wall)" in big
    p20 = next(line for line in lines if "20 PubTabNet" in line)
    assert "18.8x faster than the baseline in CPU time" in p20 and "15.0x in wall time" in p20
    assert lines[-1].strip() == "targets on CPU time: met; on wall time: NOT met"
