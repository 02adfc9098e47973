"""benchmarks/gpu_check.py, the one script a lent GPU runs, proven on the CPU in CI: every path it
takes (precision rows, Ctrl-C + --resume, torchrun DDP, a chapter through nbclient) runs here,
so the GPU's minutes are not spent on a typo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_gpu_check_passes_on_the_cpu_in_the_tiny_profile(tmp_path):
    out = tmp_path / "gpu_check.json"
    # Chapter 1 stands in for chapters 3 and 4 here: CI executes every chapter through nbval anyway.
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
               "--chapters", "01_neural_data_and_tokens", "--json", str(out)]
    printed = tmp_path / "gpu_check.log"
    with printed.open("w") as log:  # a file, not a pipe: what it printed so far survives a timeout
        try:
            returncode = subprocess.run(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=900).returncode
        except subprocess.TimeoutExpired:
            pytest.fail(f"gpu_check.py ran past 900 s; the last step it printed:\n{printed.read_text()[-4000:]}")
    result = subprocess.CompletedProcess(command, returncode, stdout=printed.read_text())
    assert result.returncode == 0, result.stdout[-6000:]
    report = json.loads(out.read_text())
    assert report["passed"] and report["environment"]["profile"] == "tiny"
    rows = report["rows"]
    by = {(row["check"], row["model"], row.get("precision")): row for row in rows}

    for model in ("ridge", "smoothing"):
        assert by[("precision", model, "fp32")]["status"] == "passed"
    for model in ("gru", "ndt1", "ndt2", "mtm", "poyo", "vq"):
        fp32, bf16, fp16 = (by[("precision", model, p)] for p in ("fp32", "bf16", "fp16"))
        assert fp32["status"] == bf16["status"] == "passed", (fp32, bf16)
        assert bf16["falling"] and bf16["vs_fp32"] <= 0.05 and bf16["steps"] >= 40, bf16
        assert fp32["step_ms"] > 0 and fp32["peak_memory_mb"] is None  # no CUDA memory on a CPU
        assert fp16["status"] == "skipped" and "CUDA only" in fp16["note"]  # said, not hidden
    resume = by[("resume", "ndt1", "auto")]
    assert resume["status"] == "passed" and resume["bit_exact"] and resume["interrupted_at_step"] == 20
    ddp = by[("ddp", "ndt1", "auto")]
    assert ddp["status"] == "passed" and ddp["ddp_wrapped"] >= 1 and ddp["backends"] == ["gloo"], ddp
    chapter = next(row for row in rows if row["check"] == "chapter")
    assert chapter["status"] == "passed" and chapter["seconds"] > 0
    assert "all checks passed" in result.stdout and "fp16 with the grad scaler runs on CUDA only" in result.stdout
