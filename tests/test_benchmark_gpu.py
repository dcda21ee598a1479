"""benchmarks/gpu.py runs (tiny components, CPU, one repeat) so it cannot rot while no GPU is at hand.
It measures nothing here: the figures belong to a GPU run (README, Real models)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def test_gpu_benchmark_runs_every_preset_through_blend_and_plain_diffusers(tmp_path, capsys):
    import gpu

    torch.set_num_threads(1)
    out = tmp_path / "rows.json"
    rows = gpu.main(["--tiny", "--device", "cpu", "--dtypes", "fp32", "--variants", "sdpa+channels-last",
                     "--repeats", "1", "--json", str(out)])
    assert [r["preset"] for r in rows] == ["unclip-l", "unclip-h", "kandinsky-2.2"]
    for r in rows:
        assert r["blend_s"] > 0 and r["diffusers_s"] > 0 and math.isfinite(r["ratio"]) and r["peak_gb"] > 0
    assert [r["prior"] for r in rows] == [False, False, True]  # kandinsky counts its prior, in both paths
    assert json.loads(out.read_text())["rows"] == rows
    printed = capsys.readouterr().out
    assert "GFLOP/s" in printed and "ratio" in printed
