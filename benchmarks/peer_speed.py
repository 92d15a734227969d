"""Meta-training speed beside the PyTorch and JAX peers: one run each, back to back.

    python benchmarks/peer_speed.py --peers_dir=DIR --torch_python=.venv-torch/bin/python \
        --jax_python=.venv-jax/bin/python [--problem=mnist] [--iters=20]

DIR holds the peers' torch_l2l.py and jax_l2l.py (one meta-iteration of the same coordinatewise
LSTM: a 20-step unroll, its backward pass and one Adam step; each prints a last line
`RESULT ... coord_steps_per_s=X`). Each peer runs in its own interpreter (a venv with torch or
jax); a peer whose interpreter is not given is skipped. l2l_tf is timed by
benchmarks/throughput.py (the same 20-step unroll forward and backward, plain graphs and XLA),
in a subprocess too, so that every contender starts from a fresh process.

Prints one line per contender and the ratio of l2l_tf's best to the fastest peer's:
    RESULT contender=torch_compile coord_steps_per_s=1510000
    RESULT l2l_tf_over_fastest_peer=1.22 (torch_compile)
Machines shared with other jobs distort the peers more than l2l_tf: compare only one quiet run.
"""

import os
import re
import subprocess
import sys

from absl import flags

from l2l_tf import cli
from l2l_tf import evaluation

_PEERS_DIR = flags.DEFINE_string("peers_dir", None, "Directory of the peer scripts.", required=True)
_TORCH_PYTHON = flags.DEFINE_string("torch_python", None, "Python of a venv with torch.")
_JAX_PYTHON = flags.DEFINE_string("jax_python", None, "Python of a venv with jax.")
_PROBLEM = flags.DEFINE_enum("problem", "mnist", ["mnist", "quadratic"], "Problem to time.")
_ITERS = flags.DEFINE_integer("iters", 20, "Timed meta-iterations per peer.", lower_bound=1)
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed unrolls of l2l_tf (median).", lower_bound=1)
_TIMEOUT = flags.DEFINE_integer("timeout_s", 1800, "Limit per contender.", lower_bound=1)
_KERNELS = flags.DEFINE_list(
  "lstm_kernels",
  ["graph", "native"],
  "l2l_tf's LSTM kernels to time (throughput.py --lstm_kernels); its best rate counts.",
)
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write the results here (JSON).")

# contender -> (interpreter flag, script in --peers_dir, extra arguments)
PEERS = {
  "torch_eager": (_TORCH_PYTHON, "torch_l2l.py", ()),
  "torch_compile": (_TORCH_PYTHON, "torch_l2l.py", ("--compile",)),
  "jax": (_JAX_PYTHON, "jax_l2l.py", ()),
}
_RATE = re.compile(r"^RESULT .*coord_steps_per_s=([0-9.eE+]+)")
# throughput.py's lines name their configuration.
_CONFIGURATION = re.compile(r"^RESULT problem=\S+ (jit=\S+ kernel=\S+) coord_steps_per_s=([0-9.]+)")
_THROUGHPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.py")


def result_rates(stdout):
  """The coord_steps_per_s of every RESULT line, in order."""
  return [float(m.group(1)) for line in stdout.splitlines() if (m := _RATE.match(line.strip()))]


def run_contender(name, command):
  """(The best coord_steps_per_s the command prints, its output); one-line errors if it fails
  or prints none."""
  try:
    done = subprocess.run(
      command, capture_output=True, text=True, timeout=_TIMEOUT.value, check=False
    )
  except FileNotFoundError:
    raise ValueError(f"{name}: no interpreter {command[0]}") from None
  except subprocess.TimeoutExpired:
    raise ValueError(f"{name}: no result within --timeout_s={_TIMEOUT.value}") from None
  rates = result_rates(done.stdout)
  if done.returncode != 0 or not rates:
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise ValueError(f"{name} failed (exit status {done.returncode}): {last}")
  print(f"RESULT contender={name} coord_steps_per_s={max(rates):.0f}", flush=True)
  return max(rates), done.stdout


def contenders():
  """(name, command) of every peer whose interpreter was given, then l2l_tf (last, so that a
  peer that cannot run fails before the longest timing)."""
  out = []
  for name, (python, script, extra) in PEERS.items():
    if python.value:
      path = os.path.join(_PEERS_DIR.value, script)
      if not os.path.isfile(path):
        raise ValueError(f"--peers_dir={_PEERS_DIR.value} has no {script}")
      args = [f"--problem={_PROBLEM.value}", f"--iters={_ITERS.value}", *extra]
      out.append((name, [python.value, path, *args]))
  if not out:
    raise ValueError("give --torch_python and/or --jax_python: there is no peer to compare with")
  throughput = [
    sys.executable,
    _THROUGHPUT,
    f"--problems={_PROBLEM.value}",
    f"--lstm_kernels={','.join(_KERNELS.value)}",
  ]
  return out + [("l2l_tf", throughput + [f"--repeats={_REPEATS.value}"])]


def main(argv):
  del argv
  outputs = {name: run_contender(name, command) for name, command in contenders()}
  rates = {name: rate for name, (rate, _) in outputs.items()}
  # Which of l2l_tf's configurations (XLA or not, LSTM kernel) gave its best rate.
  configurations = {
    m.group(1): float(m.group(2))
    for line in outputs["l2l_tf"][1].splitlines()
    if (m := _CONFIGURATION.match(line.strip()))
  }
  fastest = max((name for name in rates if name != "l2l_tf"), key=rates.get)
  ratio = rates["l2l_tf"] / rates[fastest]
  print(f"RESULT l2l_tf_over_fastest_peer={ratio:.2f} ({fastest})", flush=True)
  if _OUTPUT_JSON.value:
    evaluation.write_json(
      {
        "problem": _PROBLEM.value,
        "coord_steps_per_s": rates,
        "fastest_peer": fastest,
        "l2l_tf_over_fastest_peer": ratio,
        "l2l_tf_configurations": configurations,
      },
      _OUTPUT_JSON.value,
    )
    print(f"wrote {_OUTPUT_JSON.value}")


if __name__ == "__main__":
  cli.run(main)
