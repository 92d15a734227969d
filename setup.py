"""Installs l2l_tf: learned optimizers (Andrychowicz et al., 2016) for TensorFlow 2 / Keras 3."""

import setuptools

setuptools.setup(
  name="l2l_tf",
  version="0.1.0",
  description=(
    "Learning to learn by gradient descent by gradient descent: "
    "learned optimizers for TensorFlow 2 and Keras 3."
  ),
  packages=setuptools.find_packages(include=["l2l_tf", "l2l_tf.*"]),
  # py.typed: the package's type hints are for type checkers of its users too (PEP 561).
  package_data={
    "l2l_tf": [
      "py.typed",
      "data/mnist_sample/*.gz",
      "data/mnist_sample/README.md",
      "data/images/README.md",
      "data/images/*/*.jpg",
      "data/images/*/*/*.jpg",
      # The native kernels' source: compiled on first use (l2l_tf/kernels).
      "kernels/*.cc",
    ]
  },
  python_requires=">=3.10",
  install_requires=[
    # Like every TensorFlow library: a plain install works. The `tensorflow` wheel runs on
    # CPU everywhere; the gpu extra adds the CUDA libraries.
    "tensorflow>=2.21,<2.22",
    "keras>=3.15,<3.16",
    "tensorflow-datasets>=4.9.10,<4.10",
    # tensorflow-datasets 4.9.10 needs it on Python 3.11 but does not declare it.
    "importlib_resources>=6",
    "absl-py>=2.1,<3",
    "tensorboard>=2.20,<2.22",  # tf.summary needs it; TensorFlow 2.21's wheels do not require it
    "matplotlib>=3.8",
    "numpy>=1.26",
  ],
  extras_require={
    "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    # Adds nothing (the base install runs on CPU); kept so that `pip install ".[cpu]"`,
    # the install command of earlier versions, still works.
    "cpu": [],
    # clang-format: the native kernels' C++ (l2l_tf/kernels), as ruff is for the Python.
    "test": ["pytest>=8", "ruff==0.17.6", "clang-format==23.1.5"],
  },
)
