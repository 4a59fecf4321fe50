"""GPU set-up of a training run: TensorFlow kept off the GPUs under JAX, and what to say when no GPU is found.

Used by train/run.py; not a command.

- Under `KERAS_BACKEND=jax`, TensorFlow is still imported (by Keras itself when it is installed,
  by TensorBoard's callback and by the TFLite exporter), and by default it claims most of every
  GPU's memory beside JAX's own preallocation. `hide_gpus_from_tensorflow` makes TensorFlow see
  no GPU before anything starts its runtime. It is TensorFlow's own setting, not
  CUDA_VISIBLE_DEVICES, which would hide the GPUs from JAX too.
- `missing_gpu_advice` is the part of the no-GPU refusal that says what to install, by backend,
  and, when the machine does have an NVIDIA GPU or the CUDA packages are installed, what
  TensorFlow saw: TF_CPP_MIN_LOG_LEVEL=3 (train/run.py's default) hides its "Cannot dlopen some
  GPU libraries" lines, so a broken CUDA install would otherwise look like a machine without a GPU.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from edge.common.versions import package_version

#: Where the NVIDIA kernel driver lists the GPUs it drives (Linux).
NVIDIA_DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")
#: The pip packages of CUDA and cuDNN, which `tensorflow[and-cuda]` and `jax[cuda12]` install.
CUDA_PACKAGE_PREFIX = "nvidia-"
#: TensorFlow's own start-up lines that tell why it found no GPU.
TENSORFLOW_GPU_LINES = re.compile(r"cuInit|Cannot dlopen|Could not load dynamic library|cuda drivers|"
                                  r"CUDA driver|libcud|Could not find TensorRT|GPU will not be used", re.IGNORECASE)
#: The most of those lines repeated in the message.
MAX_REPORTED_LINES = 4
#: How long the child that starts TensorFlow with its full log may take, in seconds.
TENSORFLOW_PROBE_SECONDS = 120
#: What to install for a GPU, by Keras backend.
INSTALL_ADVICE = {
    "tensorflow": "install TensorFlow's GPU build: pip install -e '.[gpu]' (tensorflow[and-cuda], Linux x86-64 "
                  "with an NVIDIA driver)",
    "jax": "install JAX's GPU build: pip install -e '.[jax-gpu]' (jax[cuda12], Linux with an NVIDIA driver)",
    "torch": "install a CUDA build of PyTorch (https://pytorch.org/get-started/locally/)",
}


def hide_gpus_from_tensorflow() -> bool:
    """Under KERAS_BACKEND=jax, make TensorFlow see no GPU (before Keras imports it); True when it did.

    Nothing happens under the other backends, without TensorFlow installed, or when TensorFlow's
    runtime has already started (its devices can no longer change; a note says so).
    """
    if os.environ.get("KERAS_BACKEND") != "jax":
        return False
    try:
        import tensorflow as tf  # Only to hide the GPUs from it: JAX trains.
    except ImportError:  # Not installed: JAX trains without it, and nothing takes the GPUs.
        return False
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError as error:  # "Visible devices cannot be modified after being initialized".
        print(f"note: TensorFlow's GPUs could not be hidden from it ({error}); it may take GPU memory beside JAX")
        return False
    return True


def missing_gpu_advice(backend: str) -> str:
    """What to do about a machine where `backend` sees no GPU, with what TensorFlow saw when a GPU seems meant."""
    advice = INSTALL_ADVICE.get(backend, INSTALL_ADVICE["tensorflow"])
    signs = gpu_signs()
    if not signs:
        return advice
    seen = f" ({'; '.join(signs)})"
    if backend == "tensorflow":
        return f"an NVIDIA GPU seems meant{seen}, but TensorFlow found none: {tensorflow_gpu_report()}. Or {advice}"
    if backend == "jax" and not _installed("jax-cuda12-plugin"):
        return f"an NVIDIA GPU seems meant{seen}, but JAX's CUDA plugin is not installed: {advice}"
    return f"an NVIDIA GPU seems meant{seen}, but {backend} found none; {advice}"


def gpu_signs() -> list[str]:
    """What suggests that this machine has, or was set up for, an NVIDIA GPU; [] when nothing does."""
    signs = []
    if NVIDIA_DRIVER_GPUS.is_dir() and any(NVIDIA_DRIVER_GPUS.iterdir()):
        signs.append(f"the NVIDIA driver lists GPUs in {NVIDIA_DRIVER_GPUS}")
    elif shutil.which("nvidia-smi"):
        signs.append("nvidia-smi is installed")
    packages = cuda_packages()
    if packages:
        shown = ", ".join(packages[:3]) + (f" and {len(packages) - 3} more" if len(packages) > 3 else "")
        signs.append(f"CUDA packages installed: {shown}")
    return signs


def cuda_packages() -> list[str]:
    """The installed pip packages of CUDA and cuDNN (nvidia-cudnn-cu12, ...), sorted."""
    names = {(distribution.metadata["Name"] or "").lower() for distribution in importlib.metadata.distributions()}
    return sorted(name for name in names if name.startswith(CUDA_PACKAGE_PREFIX))


def tensorflow_gpu_report() -> str:
    """What this TensorFlow was built for and what its GPU start-up logged, from a child with the full log."""
    probe = ("import tensorflow as tf, json; info = tf.sysconfig.get_build_info(); "
             "print(json.dumps({key: info.get(key) for key in ('is_cuda_build', 'cuda_version', 'cudnn_version')})); "
             "tf.config.list_physical_devices('GPU')")
    try:
        completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                   timeout=TENSORFLOW_PROBE_SECONDS, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"))
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"TensorFlow could not be started to ask it ({type(error).__name__})"
    return describe_tensorflow_probe(completed.stdout, completed.stderr)


def describe_tensorflow_probe(stdout: str, stderr: str) -> str:
    """The report of `tensorflow_gpu_report` from its child's output (the build line, then the log)."""
    import json
    try:
        build = json.loads(stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        build = {}
    if build.get("is_cuda_build") is False:
        described = "this TensorFlow is a CPU-only build"
    elif build:
        described = (f"this TensorFlow was built for CUDA {build.get('cuda_version')} and "
                     f"cuDNN {build.get('cudnn_version')}")
    else:
        described = "TensorFlow did not report its build"
    lines = [_strip_log_prefix(line) for line in stderr.splitlines() if TENSORFLOW_GPU_LINES.search(line)]
    said = "; ".join(dict.fromkeys(lines[:MAX_REPORTED_LINES]))  # Repeated lines once.
    return described + (f", and its GPU start-up said: {said}" if said else ", and its GPU start-up said nothing")


def _strip_log_prefix(line: str) -> str:
    """`E0000 00:00:1.2 123 cuda_platform.cc:52] failed call to cuInit ...` -> `failed call to cuInit ...`."""
    return line.split("] ", 1)[1].strip() if "] " in line else line.strip()


def _installed(distribution: str) -> bool:
    """Whether a pip distribution is installed (its metadata, without importing it)."""
    return package_version(distribution) is not None
