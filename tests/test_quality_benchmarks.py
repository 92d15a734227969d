"""The quality benchmarks' command lines: benchmarks/verdict.py and the two shell scripts.

verdict.py runs for real (a TensorFlow start each, seconds). The shell scripts run with a stub
`python` first on PATH that records its arguments, so their flags and the commands they build
are checked without training anything.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

import repo_paths

ROOT = repo_paths.ROOT
VERDICT = os.path.join(ROOT, "benchmarks", "verdict.py")
QUADRATIC = os.path.join(ROOT, "benchmarks", "quality_quadratic.sh")
MNIST = os.path.join(ROOT, "benchmarks", "quality_mnist.sh")
NEURAL_ART = os.path.join(ROOT, "benchmarks", "quality_neural_art.sh")
CONVNET = os.path.join(ROOT, "benchmarks", "quality_convnet.sh")


def _results(**final_losses):
  return {"results": {name: {"final_loss_mean": loss} for name, loss in final_losses.items()}}


def _verdict_module():
  spec = importlib.util.spec_from_file_location("verdict", VERDICT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run_verdict(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, VERDICT, *args], capture_output=True, text=True, env=env, timeout=300
  )


def _error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_verdict_line_says_whether_learned_is_below_every_baseline():
  verdict_line = _verdict_module().verdict_line
  assert verdict_line(_results(learned=0.1, sgd=0.3, adam=0.2)["results"]) == (
    "RESULT learned_beats_all_baselines=true learned=0.1 adam=0.2 sgd=0.3"
  )
  assert "beats_all_baselines=false" in verdict_line(_results(learned=0.2, adam=0.1)["results"])
  assert "beats_all_baselines=false" in verdict_line(_results(learned=0.2, adam=0.2)["results"])


def test_verdict_reads_the_eval_json_flag(tmp_path):
  path = tmp_path / "eval.json"
  path.write_text(json.dumps(_results(learned=0.05, nag=0.5)))
  result = _run_verdict(f"--eval_json={path}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == (
    "RESULT learned_beats_all_baselines=true learned=0.05 nag=0.5"
  )


@pytest.mark.parametrize(
  "content,cause",
  [
    (None, "FileNotFoundError"),
    ("not json", "JSONDecodeError"),
    (json.dumps({"problem": "quadratic"}), "KeyError: 'results'"),
    (json.dumps(_results(adam=0.1)), "KeyError: 'learned'"),
  ],
)
def test_verdict_on_a_missing_or_unreadable_file_is_one_error_line(tmp_path, content, cause):
  path = tmp_path / "eval.json"
  if content is not None:
    path.write_text(content)
  result = _run_verdict(f"--eval_json={path}")
  assert result.returncode == 1 and not result.stdout
  assert "Traceback" not in result.stderr
  assert _error_lines(result.stderr) == [result.stderr.strip().splitlines()[-1]]
  line = _error_lines(result.stderr)[0]
  assert line.startswith(f"error: {path} is not a readable evaluate.py result (")
  assert cause in line


def test_verdict_without_the_flag_is_one_error_line(tmp_path):
  path = tmp_path / "eval.json"
  path.write_text(json.dumps(_results(learned=0.05, nag=0.5)))
  result = _run_verdict(str(path))  # the old positional form
  assert result.returncode == 1 and not result.stdout
  assert _error_lines(result.stderr) == [
    "error: flag --eval_json=None: Flag --eval_json must have a value other than None. (see --help)"
  ]


@pytest.fixture(name="run_script")
def fixture_run_script(tmp_path):
  """Runs a benchmark script in tmp_path/work with a stub `python`; returns (result, commands)."""
  stub_dir = tmp_path / "stub"
  stub_dir.mkdir()
  log = tmp_path / "commands.log"
  stub = stub_dir / "python"
  stub.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n')
  stub.chmod(0o755)
  work = tmp_path / "work"
  work.mkdir()

  def run(script, *args):
    env = dict(os.environ, PATH=f"{stub_dir}{os.pathsep}{os.environ['PATH']}", TMPDIR=str(work))
    result = subprocess.run(
      ["bash", script, *args], capture_output=True, text=True, env=env, cwd=work, timeout=60
    )
    commands = log.read_text().splitlines() if log.exists() else []
    return result, commands

  return run


def _command(commands, program):
  matching = [c for c in commands if c.startswith(program + " ")]
  assert len(matching) == 1, commands
  return matching[0].split()


def test_quality_quadratic_output_dir_reaches_every_step(run_script, tmp_path):
  result, commands = run_script(QUADRATIC, "--output_dir=runs/q")  # relative to the caller
  assert result.returncode == 0, result.stderr
  out = os.path.realpath(tmp_path / "work" / "runs" / "q")
  assert f"--output_dir={out}" in _command(commands, "scripts/train.py")
  assert f"--output_json={out}/eval.json" in _command(commands, "scripts/evaluate.py")
  assert _command(commands, "benchmarks/verdict.py")[1:] == [f"--eval_json={out}/eval.json"]


def test_quality_quadratic_defaults_to_a_new_directory(run_script, tmp_path):
  result, commands = run_script(QUADRATIC)
  assert result.returncode == 0, result.stderr
  (output_dir,) = [a for a in _command(commands, "scripts/train.py") if a.startswith("--output")]
  assert output_dir.startswith(f"--output_dir={tmp_path / 'work'}/")  # mktemp -d under TMPDIR
  eval_json = output_dir.replace("--output_dir=", "--eval_json=") + "/eval.json"
  assert _command(commands, "benchmarks/verdict.py")[1:] == [eval_json]


def test_quality_mnist_data_dir_selects_idx_files(run_script, tmp_path):
  result, commands = run_script(MNIST, "--data_dir=/data/mnist")
  assert result.returncode == 0, result.stderr
  evaluate = _command(commands, "scripts/evaluate.py")
  assert "--dataset_source=idx" in evaluate and "--data_dir=/data/mnist" in evaluate
  assert "--optimizer_path=savedmodels/mnist" in evaluate
  assert not [c for c in commands if c.startswith("scripts/train.py")]
  (eval_json,) = [a for a in evaluate if a.startswith("--output_json=")]
  verdict = _command(commands, "benchmarks/verdict.py")
  assert verdict[1:] == [eval_json.replace("--output_json=", "--eval_json=")]


def test_quality_mnist_retrain_trains_then_evaluates_its_own_optimizer(run_script, tmp_path):
  result, commands = run_script(MNIST, "--retrain", "--data_dir=mnist_idx")  # caller-relative
  assert result.returncode == 0, result.stderr
  data_dir = f"--data_dir={os.path.realpath(tmp_path / 'work' / 'mnist_idx')}"
  trainings = [c.split() for c in commands if c.startswith("scripts/train.py ")]
  assert any(data_dir in training for training in trainings), commands
  evaluate = _command(commands, "scripts/evaluate.py")
  assert data_dir in evaluate
  (optimizer,) = [a for a in evaluate if a.startswith("--optimizer_path=")]
  assert optimizer.startswith(f"--optimizer_path={tmp_path / 'work'}/")  # the retrained one


def test_quality_convnet_evaluates_the_shipped_pair_or_its_retrained_growth(run_script, tmp_path):
  result, commands = run_script(CONVNET, "--data_dir=/data/mnist")
  assert result.returncode == 0, result.stderr
  evaluate = _command(commands, "scripts/evaluate.py")
  assert "--problem=mnist_convnet" in evaluate and "--data_dir=/data/mnist" in evaluate
  assert "--optimizer_path=savedmodels/mnist_convnet" in evaluate
  assert not [c for c in commands if c.startswith("scripts/train.py")]
  result, commands = run_script(CONVNET, "--retrain", "--data_dir=/data/mnist")
  assert result.returncode == 0, result.stderr
  first, grown = [c.split() for c in commands if c.startswith("scripts/train.py ")]
  (stage1,) = [a.split("=", 1)[1] for a in first if a.startswith("--output_dir=")]
  assert f"--grow_from={stage1}/best" in grown
  assert all("--data_dir=/data/mnist" in t for t in (first, grown))
  retrained = [c for c in commands if c.startswith("scripts/evaluate.py ")][-1]  # log appends
  assert f"--optimizer_path={os.path.dirname(stage1)}/stage2/best" in retrained.split()


def test_quality_neural_art_evaluates_the_three_settings_of_one_optimizer(run_script, tmp_path):
  result, commands = run_script(NEURAL_ART, "--output_dir=na")
  assert result.returncode == 0, result.stderr
  out = os.path.realpath(tmp_path / "work" / "na")
  evaluations = [c.split() for c in commands if c.startswith("scripts/evaluate.py ")]
  assert [[a for a in e if a.startswith(("--style", "--image_size"))] for e in evaluations] == [
    [],
    ["--style=brick"],
    ["--image_size=128"],
  ]
  for evaluation, setting in zip(evaluations, ("64", "second_style", "128")):
    assert "--optimizer_path=savedmodels/neural_art" in evaluation
    assert f"--output_json={out}/{setting}.json" in evaluation
  verdicts = [c.split()[1:] for c in commands if c.startswith("benchmarks/verdict.py ")]
  assert verdicts == [[f"--eval_json={out}/{s}.json"] for s in ("64", "second_style", "128")]
  assert not [c for c in commands if c.startswith("scripts/train.py")]


def test_quality_neural_art_retrain_grows_its_own_stage_and_evaluates_it(run_script, tmp_path):
  result, commands = run_script(NEURAL_ART, "--retrain", "--output_dir=na")
  assert result.returncode == 0, result.stderr
  out = os.path.realpath(tmp_path / "work" / "na")
  trainings = [c.split() for c in commands if c.startswith("scripts/train.py ")]
  assert [next(a for a in t if a.startswith("--output_dir=")) for t in trainings] == [
    f"--output_dir={out}/stage{n}" for n in (1, 2, 4)
  ]
  assert "--init_from=results/training/ft200/best" in trainings[0]
  assert f"--grow_from={out}/stage2/best" in trainings[2] and "--optimizer=rnnprop" in trainings[2]
  for evaluation in (c.split() for c in commands if c.startswith("scripts/evaluate.py ")):
    assert f"--optimizer_path={out}/stage4/best" in evaluation


@pytest.mark.parametrize(
  "script,args,error",
  [
    (QUADRATIC, ["/tmp/out"], "error: unknown argument '/tmp/out'"),
    (QUADRATIC, ["--output_dir"], "error: --output_dir takes a value: --output_dir=DIR"),
    (QUADRATIC, ["--output_dir="], "error: --output_dir takes a value: --output_dir=DIR"),
    (MNIST, ["/data/mnist"], "error: unknown argument '/data/mnist'"),
    (MNIST, ["--retrain=true"], "error: unknown argument '--retrain=true'"),
    (
      MNIST,
      ["--retrain"],
      "error: --retrain needs --data_dir (the recipe meta-trains on full MNIST)",
    ),
    (NEURAL_ART, ["--style=brick"], "error: unknown argument '--style=brick'"),
    (
      CONVNET,
      ["--retrain"],
      "error: --retrain needs --data_dir (the recipe meta-trains on full MNIST)",
    ),
    (NEURAL_ART, ["--output_dir"], "error: --output_dir takes a value: --output_dir=DIR"),
  ],
)
def test_quality_scripts_refuse_bad_arguments_before_running_anything(
  run_script, script, args, error
):
  result, commands = run_script(script, *args)
  assert result.returncode == 2 and not result.stdout and not commands
  usage = f"usage: benchmarks/{os.path.basename(script)} ["
  lines = result.stderr.splitlines()
  assert len(lines) == 2 and lines[0] == error and lines[1].startswith(usage), result.stderr


@pytest.mark.parametrize(
  "script,flags",
  [
    (QUADRATIC, ["--output_dir=DIR"]),
    (MNIST, ["--retrain", "--data_dir=MNIST_IDX_DIR"]),
    (NEURAL_ART, ["--retrain", "--output_dir=DIR"]),
    (CONVNET, ["--retrain", "--data_dir=MNIST_IDX_DIR"]),
  ],
)
def test_quality_scripts_help_prints_usage_and_flags(run_script, script, flags):
  result, commands = run_script(script, "--help")
  assert result.returncode == 0 and not commands and not result.stderr
  assert f"usage: benchmarks/{os.path.basename(script)} [" in result.stdout
  for flag in flags:
    assert result.stdout.count(flag) >= 2, result.stdout  # in the usage line and described
