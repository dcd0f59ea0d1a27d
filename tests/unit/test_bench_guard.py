"""The benchmarks' regression guard judges each figure against its floor (bench/guard.py);
scripts/test runs the guard itself on small sizes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_guard", ROOT / "bench" / "guard.py")
guard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(guard)


def test_a_ratio_below_its_floor_or_a_memory_ratio_above_its_ceiling_is_a_regression():
    floors = {"append": {"min": 0.12}, "rss": {"max": 2.8}, "e2e": {"min": 0.014}}
    assert guard.breaches({"append": 0.25, "rss": 1.4, "e2e": 0.03}, floors) == []
    said = guard.breaches({"append": 0.06, "rss": 5.6, "e2e": 0.014}, floors)
    assert said == ["append: ratio 0.0600 is below its floor 0.12", "rss: ratio 5.6000 is above its ceiling 2.8"]
    assert guard.breaches({"append": 0.25, "rss": 1.4}, floors) == ["e2e: not measured (the benchmark gave no such figure)"]


def test_every_committed_floor_names_a_figure_of_its_suite():
    floors = json.loads((ROOT / "bench" / "floors.json").read_text())
    assert set(floors) == set(guard.SUITES)
    for suite, figures in floors.items():
        only = guard.SUITES[suite][1][guard.SUITES[suite][1].index("--only") + 1].split(",")
        assert set(figures) == set(only), suite
        assert all(set(bound) in ({"min"}, {"max"}) and list(bound.values())[0] > 0 for bound in figures.values())
