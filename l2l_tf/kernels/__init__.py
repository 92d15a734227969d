"""Native CPU kernels, compiled from source on first use.

The LSTM step (lstm_step.cc) is a TensorFlow custom op pair, built with the C++ compiler and
TensorFlow's headers (tf.sysconfig) the first time it is needed, like torch's cpp_extension:
no build step at install, and the code is compiled for the CPU that runs it (-march=native).
The library goes into a cache directory (L2L_TF_KERNEL_CACHE, default ~/.cache/l2l_tf/kernels)
under a name that hashes the source, the compiler flags and the TensorFlow version, so a
changed source or a new TensorFlow builds afresh. The write is atomic (temporary file, then
rename): concurrent first uses build twice, never read half a file.

These are CPU kernels without an XLA lowering: graphs that use them run without jit_compile,
and on CPU. The graph-op path (coordinatewise_lstm.lstm_step) stays the default everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
from types import ModuleType

import tensorflow as tf

_SOURCE = pathlib.Path(__file__).with_name("lstm_step.cc")
_OPTIMIZE = ["-O3", "-march=native", "-DNDEBUG", "-fPIC", "-shared"]
if platform.machine().lower() in ("x86_64", "amd64"):
  # GCC keeps to 256-bit vectors on some AVX-512 CPUs; the kernels are written for full width.
  _OPTIMIZE.append("-mprefer-vector-width=512")


class NativeKernelError(OSError):
  """The native kernels cannot be built or loaded here (no compiler, a compile error).

  An OSError: like a missing file, a fault of the machine's setup, which the scripts report
  in one line (cli.is_expected_error)."""


def cache_dir() -> pathlib.Path:
  """Where built libraries are kept: $L2L_TF_KERNEL_CACHE, else ~/.cache/l2l_tf/kernels."""
  default = pathlib.Path.home() / ".cache" / "l2l_tf" / "kernels"
  return pathlib.Path(os.environ.get("L2L_TF_KERNEL_CACHE") or default)


def _compiler() -> str:
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if not compiler:
    raise NativeKernelError("no C++ compiler found (install g++ or set CXX)")
  return compiler


def _build(compiler: str, flags: list[str], target: pathlib.Path) -> None:
  """Compiles the source to `target`, atomically: a temporary file renamed into place."""
  target.parent.mkdir(parents=True, exist_ok=True)
  print(
    f"l2l_tf: compiling {_SOURCE.name} for this CPU into {target.parent} (once; about a minute)",
    file=sys.stderr,
    flush=True,
  )
  handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
  os.close(handle)
  try:
    try:
      result = subprocess.run(
        [compiler, str(_SOURCE), "-o", partial, *flags], capture_output=True, text=True
      )
    except OSError as error:
      raise NativeKernelError(f"cannot run the C++ compiler {compiler}: {error.strerror}") from None
    if result.returncode != 0:
      lines = result.stderr.splitlines()
      first_error = next((line for line in lines if "error" in line), lines[0] if lines else "")
      raise NativeKernelError(f"compiling {_SOURCE.name} failed: {first_error.strip()}")
    os.replace(partial, target)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def library_path() -> pathlib.Path:
  """The op library for this source, compiler, flags and TensorFlow; built if missing."""
  compiler = _compiler()
  flags = [*tf.sysconfig.get_compile_flags(), *_OPTIMIZE, *tf.sysconfig.get_link_flags()]
  key = hashlib.sha256(
    "\0".join([_SOURCE.read_text(), compiler, *flags, tf.__version__]).encode()
  ).hexdigest()[:16]
  target = cache_dir() / f"lstm_step-{key}.so"
  if not target.exists():
    _build(compiler, flags, target)
  return target


@functools.lru_cache(maxsize=None)
def load() -> ModuleType:
  """The op library (built on first use); raises NativeKernelError if it cannot be built."""
  path = library_path()
  try:
    return tf.load_op_library(str(path))
  except tf.errors.NotFoundError as error:  # e.g. a library built against another TensorFlow
    raise NativeKernelError(f"loading {path} failed: {error}") from error
