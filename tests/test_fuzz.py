"""Fuzzing the file readers: damaged or hostile files give one `error:` line, never a traceback.

Issue 13 ("What it must show"): optimizer directories, exported SavedModels, training
checkpoints and MNIST IDX files are truncated, bit-flipped and inflated, a few hundred seeded
cases, and each one must either load or fail with an error that l2l_tf.cli.run prints as one
`error: ...` line; a truncated file must always fail. The cases run in one worker subprocess
(this file run as a script) calling the library in-process, under an address-space limit a
few GB above the worker's own baseline (TensorFlow reserves a lot of virtual memory), so a
file that makes the library allocate without bound fails the case with MemoryError. A few real
script invocations check that the scripts print that line.
"""

import gzip
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zipfile

import numpy as np
import pytest

import repo_paths

ROOT = repo_paths.ROOT
SEED = 13
CASES = {"optimizer": 120, "saved_model": 70, "idx": 60, "checkpoint": 40}  # 290 in all
HEADROOM_BYTES = 2 << 30  # the worker's address-space limit: its baseline plus this
MAX_SECONDS = 60


def _env():
  return dict(
    os.environ,
    TF_CPP_MIN_LOG_LEVEL="3",
    TF_NUM_INTRAOP_THREADS="1",
    TF_NUM_INTEROP_THREADS="1",
    OMP_NUM_THREADS="1",
    PYTHONPATH=ROOT,
  )


# -- mutations ---------------------------------------------------------------------------------


def _truncate(path, rng):
  data = open(path, "rb").read()
  with open(path, "wb") as f:
    f.write(data[: rng.randrange(len(data))])


def _bitflip(path, rng):
  data = bytearray(open(path, "rb").read())
  for _ in range(rng.randint(1, 8)):
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
  with open(path, "wb") as f:
    f.write(bytes(data))


def _append(path, rng):
  size = rng.choice([1, 100, 1 << 20])
  with open(path, "ab") as f:
    f.write(bytes(size) if rng.random() < 0.5 else rng.randbytes(size))


def _inflate_json(path, rng):
  """Asks for far more than a real config: huge or many layers, deep nesting, big metadata."""
  config = json.load(open(path))
  cell = next(iter(config["cells"].values()))["config"]
  choice = rng.randrange(5)
  if choice == 0:
    cell["hidden_sizes"] = [30000, 30000]
  elif choice == 1:
    cell["hidden_sizes"] = [20] * 100000
  elif choice == 2:
    config["metadata"]["deep"] = "DEEP"
  elif choice == 3:
    config["metadata"]["blob"] = "x" * (5 << 20)
  else:
    config["cells"] = {f"g{i}": next(iter(config["cells"].values())) for i in range(1000)}
    config["groups"] = {f"g{i}": f"^{i}$" for i in range(1000)}
  text = json.dumps(config)
  with open(path, "w") as f:
    f.write(text.replace('"DEEP"', "[" * 200000 + "]" * 200000))


def _inflate_npz(path, rng):
  """A member whose compressed few KB inflate to 20 MB (zip bomb), extra or in place."""
  with zipfile.ZipFile(path) as archive:
    members = {name: archive.read(name) for name in archive.namelist()}
  name = rng.choice(sorted(members)) if rng.random() < 0.5 else "extra.npy"
  members[name] = members[rng.choice(sorted(members))][:128] + bytes(20 << 20)
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    for member, data in members.items():
      archive.writestr(member, data)


def _inflate_idx(path, rng):
  """Header dimensions far beyond the payload (overflowing products included)."""
  opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
  with opener(path, "rb") as f:
    data = bytearray(f.read())
  ndim = data[3]
  dims = [rng.choice([2**32 - 1, 65536, 10**6, 28 * 1000]) for _ in range(ndim)]
  data[4 : 4 + 4 * ndim] = np.array(dims, ">u4").tobytes()
  with opener(path, "wb") as f:
    f.write(bytes(data))


def _inflate(path, rng):
  special = {"optimizer.json": _inflate_json, "weights.npz": _inflate_npz}.get(
    os.path.basename(path)
  )
  if "ubyte" in os.path.basename(path):
    special = _inflate_idx
  (special if special and rng.random() < 0.7 else _append)(path, rng)


MUTATIONS = {"truncate": _truncate, "bitflip": _bitflip, "inflate": _inflate}
# Files a run may lose without failing: TensorFlow ignores an unparsable checkpoint state
# file (the run starts over) and history.json is rewritten from the checkpoint's history.
UNCHECKED = ("checkpoints/checkpoint", "history.json")


# -- the worker (this file run as a script) ----------------------------------------------------


def _files(directory):
  return sorted(
    os.path.relpath(os.path.join(d, f), directory)
    for d, _, names in os.walk(directory)
    for f in names
  )


def _tiny_trainer():
  """A two-epoch quadratic meta-training run small enough to build in a second."""
  import l2l_tf  # pylint: disable=g-import-not-at-top
  from l2l_tf.training import meta_trainer  # pylint: disable=g-import-not-at-top

  rule = l2l_tf.LearnedUpdateRule(
    l2l_tf.CoordinatewiseLSTM(hidden_sizes=(4,), preprocessing="identity", output_scale=1.0)
  )
  config = meta_trainer.MetaTrainingConfig(
    num_steps=4,
    unroll_length=2,
    epochs=2,
    trajectories_per_epoch=1,
    jit_compile="false",
    log_every=100,
  )
  return meta_trainer.MetaTrainer(
    rule,
    l2l_tf.QuadraticProblem(batch_size=2),
    l2l_tf.QuadraticProblem(batch_size=2),
    config,
    log=lambda line: None,
  )


def _pristine(base):
  """{kind: (directory, loader, files to mutate)}: one valid artefact of each kind."""
  import l2l_tf  # pylint: disable=g-import-not-at-top
  from l2l_tf import export, optimizer_format  # pylint: disable=g-import-not-at-top
  from l2l_tf.data import mnist  # pylint: disable=g-import-not-at-top

  rule = l2l_tf.LearnedUpdateRule(
    {
      "kernels": l2l_tf.cells.NTMLBFGS(hidden_sizes=(6, 4), window_size=2),
      "biases": l2l_tf.CoordinatewiseLSTM(hidden_sizes=(5,), preprocessing="identity"),
    },
    {"kernels": "kernel", "biases": "bias"},
  )
  optimizer = os.path.join(base, "optimizer")
  optimizer_format.save_rule(rule, optimizer, {"problem": "fuzz", "history": [{"epoch": 1}]})
  saved_model = os.path.join(base, "saved_model")
  export.export_saved_model(
    l2l_tf.LearnedUpdateRule(
      l2l_tf.CoordinatewiseLSTM(hidden_sizes=(4,), preprocessing="identity")
    ),
    saved_model,
  )
  idx = os.path.join(base, "idx")
  os.makedirs(idx)
  for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
    shutil.copy(os.path.join(mnist.EMBEDDED_DIR, name + ".gz"), idx)
  with open(os.path.join(idx, "t10k-labels-idx1-ubyte.gz"), "rb") as f:
    plain = gzip.decompress(f.read())  # one plain file: bit flips then hit the IDX itself
  os.remove(os.path.join(idx, "t10k-labels-idx1-ubyte.gz"))
  with open(os.path.join(idx, "t10k-labels-idx1-ubyte"), "wb") as f:
    f.write(plain)
  run = os.path.join(base, "run")
  _tiny_trainer().train(run)
  latest = sorted(f for f in _files(run) if f.startswith("checkpoints/ckpt-2"))
  return {
    "optimizer": (optimizer, optimizer_format.load_rule, _files(optimizer)),
    "saved_model": (saved_model, optimizer_format.load_rule, _files(saved_model)),
    "idx": (idx, lambda d: mnist.load_mnist("idx", "test", data_dir=d), _files(idx)),
    "checkpoint": (
      run,
      lambda d: _tiny_trainer().train(d),
      latest + ["checkpoints/checkpoint", "history.json"],
    ),
  }


def _run_case(load, directory):
  """("ok", "") or ("error", the script's one line) for an expected failure."""
  from l2l_tf import cli  # pylint: disable=g-import-not-at-top

  try:
    load(directory)
    return "ok", ""
  except Exception as e:  # pylint: disable=broad-except  # the others propagate
    if not cli.is_expected_error(e):
      raise
    return "error", cli.error_line(e)


def _limit_address_space():
  """Caps the worker's address space at its current size plus HEADROOM_BYTES."""
  with open("/proc/self/status") as f:
    vm_size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
  limit = vm_size + HEADROOM_BYTES
  resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
  try:
    bytearray(HEADROOM_BYTES + (256 << 20))
    raise AssertionError("the address-space limit does not hold")
  except MemoryError:
    pass
  return vm_size, limit


def _worker(base, seed):
  """Runs every case; prints one JSON summary line (failures with their tracebacks)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf.get_logger().setLevel("ERROR")
  pristine = _pristine(os.path.join(base, "pristine"))
  vm_size, limit = _limit_address_space()
  rng = random.Random(seed)
  start, cpu_start = time.time(), time.process_time()
  counts, failures, longest = {}, [], 0
  index = 0
  seconds = {}
  for kind, number in CASES.items():
    directory, load, files = pristine[kind]
    kind_start = time.time()
    for _ in range(number):
      index += 1
      mutation = rng.choice(sorted(MUTATIONS))
      target = rng.choice(files)
      case = os.path.join(base, f"case{index}")
      shutil.copytree(directory, case)
      label = f"{kind} {mutation} {target} (case {index})"
      try:
        MUTATIONS[mutation](os.path.join(case, target), rng)
        outcome, line = _run_case(load, case)
        longest = max(longest, len(line))
        if outcome == "error" and ("\n" in line or line == "error: "):
          failures.append(f"{label}: not one line: {line!r}")
        if outcome == "ok" and mutation == "truncate" and target not in UNCHECKED:
          failures.append(f"{label}: a truncated file was accepted")
      except BaseException:  # pylint: disable=broad-except  # MemoryError and tracebacks too
        failures.append(f"{label}: {traceback.format_exc()[-1500:]}")
        outcome = "traceback"
      counts[f"{kind} {outcome}"] = counts.get(f"{kind} {outcome}", 0) + 1
      shutil.rmtree(case, ignore_errors=True)
    seconds[kind] = round(time.time() - kind_start, 1)
  print(
    json.dumps(
      {
        "cases": index,
        "seconds": time.time() - start,
        "counts": counts,
        "seconds_by_kind": seconds,
        "cpu_seconds": time.process_time() - cpu_start,
        "failures": failures,
        "vm_size": vm_size,
        "limit": limit,
        "longest_line": longest,
      }
    )
  )


def test_fuzzed_files_give_one_line_errors(tmp_path):
  result = subprocess.run(
    [sys.executable, __file__, str(tmp_path), str(SEED)],
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  print(
    f"\nfuzz: {summary['cases']} cases in {summary['cpu_seconds']:.1f} s of CPU "
    f"({summary['seconds']:.1f} s wall on a shared machine; by kind "
    f"{summary['seconds_by_kind']}), address-space limit {summary['limit'] / 2**30:.1f} GiB "
    f"(baseline {summary['vm_size'] / 2**30:.1f} GiB), longest error line "
    f"{summary['longest_line']} chars; outcomes {summary['counts']}"
  )
  assert summary["cases"] == sum(CASES.values())
  assert not summary["failures"], "\n".join(summary["failures"])
  assert summary["cpu_seconds"] < MAX_SECONDS
  for kind in CASES:  # every kind really exercised the error path
    assert summary["counts"].get(f"{kind} error", 0) > 0, kind


# -- real script invocations -------------------------------------------------------------------

TINY_TRAINING = (
  "--epochs=1",
  "--trajectories_per_epoch=1",
  "--num_steps=4",
  "--unroll_length=2",
  "--num_validation_problems=2",
  "--jit_compile=false",
)


def _start(script, *args, file_size_limit=None):
  """Starts a script; file_size_limit (bytes) makes larger writes fail as on a full disk."""

  def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failing write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

  return subprocess.Popen(
    [sys.executable, os.path.join(ROOT, "scripts", script), *args],
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    preexec_fn=limit_file_size if file_size_limit else None,
  )


def _finish(process):
  stdout, stderr = process.communicate(timeout=600)
  return process.returncode, stdout, stderr


def _assert_one_error_line(result, *fragments):
  returncode, _, stderr = result
  assert returncode == 1, stderr[-2000:]
  assert "Traceback" not in stderr, stderr[-3000:]
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr[-2000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


@pytest.fixture(name="damaged")
def fixture_damaged(tmp_path):
  """An optimizer directory with a truncated weights.npz, an export with truncated
  variables, and an MNIST IDX directory whose labels are out of range."""
  from l2l_tf import cells, export, learned_rule  # pylint: disable=g-import-not-at-top
  from l2l_tf import optimizer_format  # pylint: disable=g-import-not-at-top
  from l2l_tf.data import mnist  # pylint: disable=g-import-not-at-top

  rule = learned_rule.LearnedUpdateRule(
    cells.CoordinatewiseLSTM(hidden_sizes=(4,), preprocessing="identity", output_scale=1.0)
  )
  optimizer = tmp_path / "optimizer"
  optimizer_format.save_rule(rule, str(optimizer))
  weights = optimizer / optimizer_format.WEIGHTS_FILE
  weights.write_bytes(weights.read_bytes()[:200])
  saved_model = tmp_path / "saved_model"
  export.export_saved_model(rule, str(saved_model))
  data = saved_model / "variables" / "variables.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:100])
  idx = tmp_path / "idx"
  idx.mkdir()
  for name in (
    "train-images-idx3-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
  ):
    shutil.copy(os.path.join(mnist.EMBEDDED_DIR, name), idx)
  labels = mnist.read_idx(os.path.join(mnist.EMBEDDED_DIR, "train-labels-idx1-ubyte.gz"))
  labels[7] = 10
  header = bytes([0, 0, 0x08, 1]) + np.array(labels.shape, ">u4").tobytes()
  (idx / "train-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
  return {
    "optimizer": str(optimizer),
    "saved_model": str(saved_model),
    "idx": str(idx),
    "out": tmp_path / "out",
  }


def test_scripts_print_one_error_line_for_damaged_files(damaged):
  out = damaged["out"]
  quick = ("--num_problems=2", "--num_steps=4", "--notune")
  processes = {
    "evaluate": _start("evaluate.py", f"--optimizer_path={damaged['optimizer']}", *quick),
    "export": _start(
      "export.py", f"--optimizer_path={damaged['optimizer']}", f"--output_path={out / 'export'}"
    ),
    "generalization": _start(
      "generalization.py",
      f"--optimizer_path={damaged['optimizer']}",
      f"--output_dir={out / 'generalization'}",
      "--num_problems=1",
    ),
    "init_from": _start(
      "train.py",
      f"--init_from={damaged['optimizer']}",
      f"--output_dir={out / 'init_from'}",
      *TINY_TRAINING,
    ),
    "saved_model": _start("evaluate.py", f"--optimizer_path={damaged['saved_model']}", *quick),
    "labels": _start(
      "train.py",
      "--problem=mnist",
      "--dataset_source=idx",
      f"--data_dir={damaged['idx']}",
      f"--output_dir={out / 'labels'}",
      *TINY_TRAINING,
    ),
  }
  results = {name: _finish(process) for name, process in processes.items()}
  for name in ("evaluate", "export", "generalization", "init_from"):
    _assert_one_error_line(results[name], "weights.npz: unreadable weights (BadZipFile")
  _assert_one_error_line(results["saved_model"], "unreadable SavedModel variables")
  _assert_one_error_line(results["labels"], "train-labels-idx1-ubyte: label 10 outside 0..9")
  assert not out.exists()  # refused before any output was created


def test_train_checkpoint_failures_are_one_line(tmp_path):
  run = str(tmp_path / "run")
  # Disk full while checkpointing: writes over 40 KB fail (the checkpoint with the meta-
  # optimizer's Adam slots is larger; run.json, best/ and the event file are smaller).
  full = _start(
    "train.py", f"--output_dir={tmp_path / 'full'}", *TINY_TRAINING, file_size_limit=40_000
  )
  first = _finish(_start("train.py", f"--output_dir={run}", *TINY_TRAINING))
  assert first[0] == 0, first[2][-2000:]
  _assert_one_error_line(_finish(full), "ckpt-1")
  # A damaged checkpoint: the same command resumes from it and must say so in one line.
  data = [
    name for name in os.listdir(os.path.join(run, "checkpoints")) if name.startswith("ckpt-1.data")
  ]
  path = os.path.join(run, "checkpoints", data[0])
  with open(path, "rb") as f:
    content = f.read()
  with open(path, "wb") as f:
    f.write(content[: len(content) // 2])
  _assert_one_error_line(_finish(_start("train.py", f"--output_dir={run}", *TINY_TRAINING)))


if __name__ == "__main__":
  _worker(sys.argv[1], int(sys.argv[2]))
