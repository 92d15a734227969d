"""benchmarks/keras_step_time.py for real on a few batches: its JSON agrees with what it prints."""

import json
import os
import subprocess
import sys

import pytest

import repo_paths

pytestmark = pytest.mark.slow


def _run(*args):
  return subprocess.run(
    [sys.executable, os.path.join(repo_paths.ROOT, "benchmarks", "keras_step_time.py"), *args],
    capture_output=True,
    text=True,
    env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    timeout=600,
    check=False,
  )


def test_timings_json_holds_each_optimizer_its_ratio_and_the_refusal(tmp_path):
  out = tmp_path / "timing.json"
  result = _run(
    "--steps=10", "--rounds=1", "--warmup=2", "--cells=lstm,ntm_bfgs", f"--output_json={out}"
  )
  assert result.returncode == 0, result.stderr[-2000:]
  data = json.loads(out.read_text())
  timing = data["jit_compile"]["false"]
  adam, lstm = timing["optimizers"]["adam"], timing["optimizers"]["lstm"]
  assert lstm["over_adam_step_time"] == pytest.approx(lstm["step_ms"] / adam["step_ms"])
  assert adam["over_adam_cpu_time"] == pytest.approx(1.0)
  # 80 float32 state values per parameter (2 x 20 units, h and c), plus a few scalars
  assert lstm["params"] == 15910 and lstm["state_bytes_per_param"] == pytest.approx(320, abs=0.01)
  assert "max_dense_coordinates" in timing["refused"]["ntm_bfgs"]
  printed = f"cell=lstm over_adam_step_time={lstm['over_adam_step_time']:.2f}"
  assert printed in result.stdout
  assert "command" in data["provenance"]


def test_a_bad_jit_setting_is_refused_before_any_timing(tmp_path):
  result = _run("--jit_compile=maybe", f"--output_json={tmp_path / 'x.json'}")
  assert result.returncode != 0 and "Traceback" not in result.stderr
  assert "--jit_compile: expected true or false" in result.stderr.strip().splitlines()[-1]
  assert "RESULT" not in result.stdout and not (tmp_path / "x.json").exists()
