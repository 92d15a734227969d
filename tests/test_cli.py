"""What a person at the command line sees: --help, the missing-TensorFlow message, progress."""

import os
import re
import subprocess
import sys
import textwrap

import pytest

from l2l_tf import evaluation
from l2l_tf.problems.quadratic import QuadraticProblem

import repo_paths

ROOT = repo_paths.ROOT

# The optimizee flags every script that calls cli.define_problem_flags() must show under --help.
PROBLEM_FLAGS = (
  "problem",
  "num_steps",
  "seed",
  "dataset_source",
  "data_dir",
  "hidden_sizes",
  "activation",
  "labels",
)

HELP_FLAGS = {
  "scripts/train.py": PROBLEM_FLAGS
  + ("output_dir", "optimizer", "epochs", "strategy", "cpu_devices", "tpu", "lstm_kernel"),
  "scripts/evaluate.py": PROBLEM_FLAGS + ("optimizer_path", "num_problems", "output_json"),
  "scripts/generalization.py": (
    "optimizer_path",
    "output_dir",
    "num_problems",
    "dataset_source",
    "data_dir",
    "seed",
    "grid_points",
  ),
  "scripts/export.py": ("optimizer_path", "output_path", "evaluation_json", "checkpoint"),
  "scripts/make_results.py": ("root", "check"),
  "scripts/serve_check.py": ("saved_model", "signature", "num_coordinates"),
  "benchmarks/distributed_throughput.py": ("problem", "batch_size", "trajectories", "modes"),
  "benchmarks/input_pipeline.py": ("problems", "unroll_length", "repeats"),
  "benchmarks/keras_mnist_fit.py": (
    "optimizer_path",
    "dataset_source",
    "data_dir",
    "seeds",
    "epochs",
    "adam_grid",
  ),
  "benchmarks/keras_step_time.py": ("steps", "rounds", "jit_compile", "output_json"),
  "benchmarks/meta_training_memory.py": (
    "problems",
    "recompute",
    "mnist_unroll",
    "large_unroll",
    "max_rss_mib",
    "min_available_mib",
    "lstm_kernels",
    "output_json",
  ),
  "benchmarks/mnist_seeds.py": PROBLEM_FLAGS + ("optimizer_paths", "horizons", "num_problems"),
  "benchmarks/mnist_paper_setting.py": PROBLEM_FLAGS
  + ("optimizer_path", "horizons", "num_problems", "scales"),
  "benchmarks/peer_speed.py": (
    "peers_dir",
    "torch_python",
    "jax_python",
    "problem",
    "iters",
    "lstm_kernels",
  ),
  "benchmarks/sharing_cost.py": ("layouts", "repeats", "windows"),
  "benchmarks/sharing_quadratic.py": ("optimizers", "num_steps", "seeds"),
  "benchmarks/throughput.py": ("problems", "jit", "unroll_length", "lstm_kernels"),
  "benchmarks/validation_baselines.py": PROBLEM_FLAGS
  + ("num_validation_problems", "horizons", "validation_window"),
  "benchmarks/verdict.py": ("eval_json",),
}


def _python(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
  )


def _listed_flags(help_text):
  """Names of the flags a --help output describes ("  --name: ..." or "  --[no]name: ...")."""
  return set(re.findall(r"^  --(?:\[no\])?(\w+):", help_text, flags=re.MULTILINE))


def test_every_absl_program_is_covered():
  programs = [f"scripts/{name}" for name in os.listdir(os.path.join(ROOT, "scripts"))]
  programs += [f"benchmarks/{name}" for name in os.listdir(os.path.join(ROOT, "benchmarks"))]
  absl_programs = set()
  for path in programs:
    if path.endswith(".py"):
      with open(os.path.join(ROOT, path)) as f:
        if "from absl import flags" in f.read():
          absl_programs.add(path)
  assert absl_programs == set(HELP_FLAGS)


@pytest.mark.parametrize("script", sorted(HELP_FLAGS))
def test_help_lists_the_flags_that_matter(script):
  result = _python(os.path.join(ROOT, script), "--help")
  listed = _listed_flags(result.stdout)
  missing = [name for name in HELP_FLAGS[script] if name not in listed]
  assert not missing, f"{script} --help does not list {missing}:\n{result.stdout}"


_BLOCK_IMPORTS = textwrap.dedent("""
    import sys

    class Block:
      '''Makes the named packages look uninstalled.'''

      def find_spec(self, name, path=None, target=None):
        if name == {blocked!r} or name.startswith({blocked!r} + "."):
          raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

    sys.meta_path.insert(0, Block())
    import l2l_tf
    """)


def test_import_without_tensorflow_says_how_to_install_it():
  result = _python("-c", _BLOCK_IMPORTS.format(blocked="tensorflow"))
  assert result.returncode != 0
  assert result.stderr.count("Traceback") == 1, result.stderr
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("ModuleNotFoundError: l2l_tf needs TensorFlow 2.21"), last_line
  assert "pip install 'tensorflow>=2.21,<2.22'" in last_line


def test_a_broken_tensorflow_keeps_its_own_error():
  result = _python("-c", _BLOCK_IMPORTS.format(blocked="tensorflow.python"))
  assert result.returncode != 0
  assert "No module named 'tensorflow.python'" in result.stderr
  assert "l2l_tf needs TensorFlow" not in result.stderr


class _FakeClock:
  """Returns the given times, one per call."""

  def __init__(self, *times):
    self.times = list(times)

  def __call__(self):
    return self.times.pop(0)


def test_progress_reports_count_elapsed_and_an_eta_without_the_first_item():
  lines = []
  # Started at 0; the first item (with tracing) ends at 10 s, the next ones take 2 s each.
  progress = evaluation.Progress(
    "tuning adam",
    4,
    "learning rates",
    lines.append,
    interval=0,
    clock=_FakeClock(0, 10, 12, 14, 16),
  )
  for _ in range(4):
    progress.advance()
  assert lines == [
    "tuning adam: 1/4 learning rates, 10 s, ETA 30 s",
    "tuning adam: 2/4 learning rates, 12 s, ETA 4 s",
    "tuning adam: 3/4 learning rates, 14 s, ETA 2 s",
    "tuning adam: 4/4 learning rates, 16 s",
  ]


def test_progress_waits_the_interval_between_lines_but_always_reports_the_end():
  lines = []
  progress = evaluation.Progress(
    "variants", 4, "variants", lines.append, interval=5, clock=_FakeClock(0, 10, 12, 14, 16)
  )
  for _ in range(4):
    progress.advance()
  assert [line.split(",")[0] for line in lines] == [
    "variants: 1/4 variants",
    "variants: 4/4 variants",
  ]


@pytest.mark.parametrize("seconds,text", [(42.4, "42 s"), (210, "3.5 min"), (4.5 * 3600, "4.5 h")])
def test_format_duration(seconds, text):
  assert evaluation.format_duration(seconds) == text


def test_compare_logs_a_line_per_tuning_grid_point(monkeypatch):
  monkeypatch.setattr(evaluation, "PROGRESS_INTERVAL_SECONDS", 0)
  lines = []
  evaluation.compare(
    QuadraticProblem(batch_size=4),
    {},
    seed=0,
    num_steps=3,
    baselines=("adam", "sgd"),
    learning_rates=(1e-3, 1e-2, 1e-1),
    fixed_learning_rates={"sgd": 0.1},
    log=lines.append,
  )
  assert len(lines) == 4, lines
  for done, line in enumerate(lines[:2], start=1):
    assert re.fullmatch(rf"tuning adam: {done}/3 learning rates, \d+ s, ETA \d+ s", line), line
  assert re.fullmatch(r"tuning adam: 3/3 learning rates, \d+ s", lines[2]), lines[2]
  assert lines[3].startswith("tuned adam: learning_rate=")


@pytest.mark.parametrize(
  "program",
  [
    "benchmarks/mnist_paper_setting.py",
    "benchmarks/mnist_seeds.py",
    "benchmarks/validation_baselines.py",
  ],
)
def test_mnist_benchmarks_default_to_the_mnist_problem(program):
  result = _python(program, "--help")
  assert re.search(
    r"^  --problem: <[^>]*>:\s+Optimizee family\.\s+\(default: 'mnist'\)",
    result.stdout,
    flags=re.MULTILINE,
  ), result.stdout
