"""benchmarks/peer_speed.py: l2l_tf's throughput.py for real (the quadratic, one repeat), the
peers replaced by stub interpreters that print what the real peer scripts print."""

import json
import os
import re
import subprocess
import sys

import repo_paths

SCRIPT = os.path.join(repo_paths.ROOT, "benchmarks", "peer_speed.py")
STUB = """#!/bin/sh
case "$*" in
  *--compile*) echo "RESULT framework=torch_compile problem=quadratic coord_steps_per_s=2000" ;;
  *) echo "RESULT framework=torch problem=quadratic coord_steps_per_s=1000" ;;
esac
"""
FAILING = """#!/bin/sh
echo "Traceback (most recent call last):" >&2
echo "ModuleNotFoundError: No module named 'jax'" >&2
exit 1
"""


def _interpreter(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  path.chmod(0o755)
  return str(path)


def _peers_dir(tmp_path):
  peers = tmp_path / "peers"
  peers.mkdir()
  for script in ("torch_l2l.py", "jax_l2l.py"):
    (peers / script).write_text("raise SystemExit('run by the stub interpreter instead')\n")
  return str(peers)


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=600
  )


def test_prints_each_contender_and_the_ratio_to_the_fastest_peer(tmp_path):
  torch = _interpreter(tmp_path, "torch_python", STUB)
  out = tmp_path / "speed.json"
  result = _run(
    f"--peers_dir={_peers_dir(tmp_path)}",
    f"--torch_python={torch}",
    "--problem=quadratic",
    "--repeats=1",
    "--lstm_kernels=graph",  # the native kernels' timing is tested in test_native_kernels
    f"--output_json={out}",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  lines = dict(re.findall(r"RESULT contender=(\S+) coord_steps_per_s=(\d+)", result.stdout))
  assert lines["torch_eager"] == "1000" and lines["torch_compile"] == "2000"
  ours = float(lines["l2l_tf"])
  assert ours > 0
  ratio = re.search(r"RESULT l2l_tf_over_fastest_peer=([0-9.]+) \(torch_compile\)", result.stdout)
  assert float(ratio.group(1)) == round(ours / 2000, 2)
  written = json.loads(out.read_text())
  # l2l_tf's best rate is one of its configurations' (graph ops with and without XLA here).
  assert sorted(written["l2l_tf_configurations"]) == [
    "jit=false kernel=graph",
    "jit=true kernel=graph",
  ]
  assert max(written["l2l_tf_configurations"].values()) == written["coord_steps_per_s"]["l2l_tf"]


def test_refuses_without_peers_and_names_a_failing_peer_in_one_line(tmp_path):
  peers = _peers_dir(tmp_path)
  result = _run(f"--peers_dir={peers}")
  assert result.returncode != 0 and "there is no peer to compare with" in result.stderr
  empty = tmp_path / "empty"
  empty.mkdir()
  result = _run(f"--peers_dir={empty}", f"--jax_python={sys.executable}")
  assert result.returncode != 0 and f"--peers_dir={empty} has no jax_l2l.py" in result.stderr
  failing = _interpreter(tmp_path, "jax_python", FAILING)
  result = _run(
    f"--peers_dir={peers}", f"--jax_python={failing}", "--problem=quadratic", "--repeats=1"
  )
  assert result.returncode != 0
  assert "jax failed (exit status 1): ModuleNotFoundError: No module named 'jax'" in result.stderr
  assert "Traceback" not in result.stderr
  assert "contender=l2l_tf" not in result.stdout  # the peers run first: no timing was wasted
