"""Where a training run trains: the devices it sees, its precision, its distribution over them, XLA, the no-GPU refusal.

Used by train/run.py (and benchmarks/train_throughput.py); not a command. It imports no Keras at
module level: `hide_gpus_from_tensorflow` must run before Keras is imported, so Keras and the
backends are imported inside the functions that need them, once a run has started.

- Under `KERAS_BACKEND=jax`, TensorFlow is still imported (by Keras itself when it is installed,
  by TensorBoard's callback and by the TFLite exporter), and by default it claims most of every
  GPU's memory beside JAX's own preallocation. `hide_gpus_from_tensorflow` makes TensorFlow see
  no GPU before anything starts its runtime. It is TensorFlow's own setting, not
  CUDA_VISIBLE_DEVICES, which would hide the GPUs from JAX too.
- Devices: `gpu_names` and `gpu_compute_capabilities` ask the backend in use; `cpu_name` names the
  device of a GPU-less run.
- Precision: `resolve_precision` picks the Keras dtype policy from the GPUs' compute capability,
  `set_precision` applies it.
- Distribution: `distribution_for` is data parallelism over several GPUs through the backend's own
  engine; `fit_batch_to_replicas` makes the global batch split evenly over them;
  `strategy_scope_of` is the tf.distribute scope a model was built in.
- XLA: `resolve_jit_compile` and `why_no_xla`.
- The no-GPU refusal: `refuse_cpu_training`, and `missing_gpu_advice`, the part of it that says
  what to install, by backend, and, when the machine does have an NVIDIA GPU or the CUDA packages
  are installed, what TensorFlow saw: TF_CPP_MIN_LOG_LEVEL=3 (train/__init__.py's default) hides
  its "Cannot dlopen some GPU libraries" lines, so a broken CUDA install would otherwise look like
  a machine without a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.common import machine
from edge.common.errors import UserError
from edge.common.versions import package_version
from train import config as train_config
from train.config import TrainConfig

#: Where the NVIDIA kernel driver lists the GPUs it drives (Linux).
NVIDIA_DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")
#: The pip packages of CUDA and cuDNN, which `tensorflow[and-cuda]` and `jax[cuda12]` install.
CUDA_PACKAGE_PREFIX = "nvidia-"
#: TensorFlow's own start-up lines that tell why it found no GPU.
TENSORFLOW_GPU_LINES = re.compile(
    r"cuInit|Cannot dlopen|Could not load dynamic library|cuda drivers|"
    r"CUDA driver|libcud|Could not find TensorRT|GPU will not be used",
    re.IGNORECASE,
)
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
#: The GPU-less refusal: an ImageNet backbone at this many pixels a side or more ...
CPU_REFUSAL_MIN_IMAGE_SIZE = 128
#: ... on a dataset of this many training images or more (CIFAR's 45,000 after validation) takes
#: days on a CPU (7.4 images/s measured here: README, Throughput). Smaller runs still train.
CPU_REFUSAL_MIN_TRAIN_IMAGES = 10_000
#: bfloat16 runs fast from NVIDIA's Ampere GPUs on (compute capability 8.0: A100, RTX 30xx, L4, H100);
#: older ones (T4 7.5, V100 7.0, P100 6.0) run float16 fast and bfloat16 slowly or not at all.
BFLOAT16_MIN_COMPUTE_CAPABILITY = (8, 0)


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


def gpu_names() -> list[str]:
    """The GPUs the Keras backend sees, by name (such as "NVIDIA H100 80GB HBM3"); empty on a CPU."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # Only the backend in use is imported; the others need not be installed.

        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    if backend == "torch":
        import torch  # Only the backend in use is imported; the others need not be installed.

        return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.

    return [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def gpu_compute_capabilities() -> list[tuple[int, int] | None]:
    """CUDA compute capability (major, minor) of each GPU gpu_names() lists, None where the backend does not say."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # Only the backend in use is imported; the others need not be installed.

        return [
            _capability(getattr(device, "compute_capability", None))
            for device in jax.devices()
            if device.platform == "gpu"
        ]
    if backend == "torch":
        import torch  # Only the backend in use is imported; the others need not be installed.

        return [_capability(torch.cuda.get_device_capability(index)) for index in range(torch.cuda.device_count())]
    import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.

    return [
        _capability(tf.config.experimental.get_device_details(gpu).get("compute_capability"))
        for gpu in tf.config.list_physical_devices("GPU")
    ]


def _capability(value) -> tuple[int, int] | None:
    """(major, minor) from what a backend reports: (8, 0) (TensorFlow, torch) or "8.0" (JAX)."""
    try:
        major, minor = (value.split(".") if isinstance(value, str) else value)[:2]
        return int(major), int(minor)
    except (AttributeError, TypeError, ValueError):
        return None


def cpu_name() -> str:
    """The device a GPU-less run trains on, as metadata.json's "devices" names it."""
    return f"CPU ({machine.processor_name()}, {os.cpu_count()} cores)"


def resolve_precision(
    precision: str, gpus: list[str], capabilities: Sequence[tuple[int, int] | None]
) -> tuple[str, str]:
    """The Keras dtype policy for `--precision` and why: (policy, reason), the reason as metadata.json records it.

    "auto" is mixed_bfloat16 on GPUs of compute capability 8.0 or more (`capabilities`, one per GPU of
    `gpus`; the lowest counts), mixed_float16 below that or when it is unknown, float32 on a CPU.
    Free Colab and Kaggle GPUs are T4s (7.5) and P100s (6.0): no fast bfloat16 there, fast float16.
    Keras wraps the optimizer of a mixed_float16 model in a LossScaleOptimizer by itself
    (`compile(auto_scale_loss=True)`, its default), so float16 gradients do not underflow.
    """
    if precision != "auto":
        return precision, "chosen with --precision"
    if not gpus:
        return "float32", "no GPU: mixed precision brings a CPU no speed"
    known = [capability for capability in capabilities if capability is not None]
    if not known or len(known) < len(gpus):
        return "mixed_float16", (
            "GPU compute capability unknown: float16, which every CUDA GPU runs fast, with loss scaling"
        )
    lowest = min(known)
    described = f"compute capability {lowest[0]}.{lowest[1]}"
    if lowest >= BFLOAT16_MIN_COMPUTE_CAPABILITY:
        return "mixed_bfloat16", f"{described} runs bfloat16 fast (8.0 or more), and bfloat16 needs no loss scaling"
    return "mixed_float16", f"{described} has no fast bfloat16 (below 8.0): float16 with loss scaling"


def set_precision(precision: str, gpus: list[str]) -> tuple[str, str]:
    """Resolve `--precision` for `gpus` (resolve_precision) and make it Keras' global dtype policy; (policy, reason).

    The GPUs' compute capabilities are asked for only when they decide: "auto" with a GPU.
    """
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    capabilities = gpu_compute_capabilities() if gpus and precision == "auto" else []
    policy, reason = resolve_precision(precision, gpus, capabilities)
    keras.mixed_precision.set_global_policy(policy)
    return policy, reason


@dataclasses.dataclass(frozen=True)
class Distribution:
    """How a run spreads over its devices: `scope` builds the model in it, `replicas` devices train in sync."""

    scope: Callable[[], contextlib.AbstractContextManager]
    replicas: int = 1


def distribution_for(gpus: list[str]) -> Distribution:
    """Data parallelism across GPUs (`gpus`: gpu_names()) through the backend's own engine, when there are several."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    single = Distribution(scope=contextlib.nullcontext)
    if len(gpus) < 2:
        return single
    if keras.backend.backend() == "jax":
        data_parallel = keras.distribution.DataParallel()  # Over every device JAX sees.
        keras.distribution.set_distribution(data_parallel)
        return Distribution(scope=contextlib.nullcontext, replicas=len(data_parallel.device_mesh.devices.flatten()))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.

        strategy = tf.distribute.MirroredStrategy(devices=mirrored_devices())
        return Distribution(scope=strategy.scope, replicas=strategy.num_replicas_in_sync)
    print("note: several GPUs found, but multi-GPU training is implemented for the jax and tensorflow backends only")
    return single


def mirrored_devices() -> list[str]:
    """The devices TensorFlow's MirroredStrategy trains on: every GPU TensorFlow sees (its own default)."""
    import tensorflow as tf  # Only the backend in use is imported; the others need not be installed.

    return [device.name for device in tf.config.list_logical_devices("GPU")]


def fit_batch_to_replicas(config: TrainConfig, replicas: int) -> TrainConfig:
    """`config` with its global batch rounded down to a multiple of `replicas`, saying so when it changes.

    Data parallelism splits every batch evenly over the devices, so 128 images cannot train on 3 or 6
    GPUs. Rounded down, not refused: a few images less per step (126 on 3 or 6 GPUs) changes the
    recipe far less than a run that does not start; config.json records the batch that trained.
    """
    if replicas < 2 or config.batch_size % replicas == 0:
        return config
    batch_size = max(config.batch_size // replicas * replicas, replicas)
    print(
        f"note: batch size {config.batch_size} does not divide over {replicas} devices; "
        f"training with {batch_size} ({batch_size // replicas} per device)"
    )
    return dataclasses.replace(config, batch_size=batch_size)


def strategy_scope_of(model) -> contextlib.AbstractContextManager:
    """The tf.distribute strategy scope `model` was built in (TensorFlow's default one when none was); no
    scope under the other backends."""
    strategy = getattr(model, "distribute_strategy", None)  # The TensorFlow backend's models only.
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def resolve_jit_compile(model, gpus: list[str]) -> bool:
    """Whether the training step compiles with XLA: yes when every layer can, on a GPU and under JAX.

    Not Keras' "auto", which also says no under tf.distribute. Off for the torch backend, under
    TensorFlow with several GPUs (MirroredStrategy; Keras turns XLA off there too), and under
    TensorFlow on a CPU only: XLA's CPU convolutions are slower than TensorFlow's oneDNN kernels,
    measured here 60 s against 6 s for an epoch of the cnn (README, Throughput).
    """
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    backend = keras.backend.backend()
    if backend == "torch" or (backend == "tensorflow" and len(gpus) != 1):
        return False
    return all(layer.supports_jit for layer in model._flatten_layers())


def why_no_xla(model, gpus: list[str]) -> str:
    """Why `resolve_jit_compile` said no, for the run's first line."""
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    refusing = sorted({type(layer).__name__ for layer in model._flatten_layers() if not layer.supports_jit})
    if refusing:
        return f"{', '.join(refusing)} cannot compile"
    if keras.backend.backend() == "torch":
        return "the torch backend runs eagerly"
    return "TensorFlow's XLA is slower than its own kernels on a CPU" if not gpus else "MirroredStrategy"


def training_record(
    model, gpus: list[str], *, precision: str, precision_reason: str, replicas: int, jit_compile: bool
) -> dict:
    """metadata.json's "training" block as the run starts (its rate comes when the stages are done), printed as
    the run's first line: `training on NVIDIA H100 80GB HBM3: backend jax, precision mixed_bfloat16, XLA on`.

    `precision` and `precision_reason` are set_precision's, `jit_compile` resolve_jit_compile's for `model` on
    `gpus`, `replicas` the Distribution's.
    """
    import keras  # Loaded by run() already; imported here so --help never pays for it.

    training = {
        "backend": keras.backend.backend(),
        "devices": gpus or [cpu_name()],
        "precision": precision,
        "precision_reason": precision_reason,
        "replicas": replicas,
        "jit_compile": jit_compile,
        "images_per_second": None,
    }
    print(
        f"training on {', '.join(training['devices'])}: backend {training['backend']}, precision {precision}, "
        f"XLA {'on' if jit_compile else 'off'}" + ("" if jit_compile else f" ({why_no_xla(model, gpus)})")
    )
    return training


def refuse_cpu_training(config: TrainConfig, train_images: int, gpus: list[str], backend: str | None = None) -> None:
    """Stop a run that would take days: an ImageNet backbone at 128 px or more on a full-size dataset, no GPU.

    The smoke preset, the from-scratch CNNs and small datasets are not affected; --allow-cpu overrides.
    The message says what to install for `backend` (default: Keras' own), and what TensorFlow saw
    when the machine seems to have a GPU (missing_gpu_advice).
    """
    size = config.resolved_image_size or 0
    if (
        gpus
        or config.allow_cpu
        or config.model not in train_config.IMAGENET_MODELS
        or size < CPU_REFUSAL_MIN_IMAGE_SIZE
        or train_images < CPU_REFUSAL_MIN_TRAIN_IMAGES
    ):
        return
    if backend is None:
        import keras  # Loaded by run() already; imported here so --help never pays for it.

        backend = keras.backend.backend()
    raise TrainingDeviceError(
        f"no GPU found: {config.model} at {size} px on {train_images:,} training images would take days on "
        f"this CPU. To train on a GPU, {missing_gpu_advice(backend)}; "
        "or pass --allow-cpu to train on the CPU anyway, or try --preset smoke"
    )


class TrainingDeviceError(UserError):
    """The run needs a GPU that the machine does not have (or the backend cannot see)."""


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
    probe = (
        "import tensorflow as tf, json; info = tf.sysconfig.get_build_info(); "
        "print(json.dumps({key: info.get(key) for key in ('is_cuda_build', 'cuda_version', 'cudnn_version')})); "
        "tf.config.list_physical_devices('GPU')"
    )
    try:
        completed = subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            timeout=TENSORFLOW_PROBE_SECONDS,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0"),
        )
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
        described = (
            f"this TensorFlow was built for CUDA {build.get('cuda_version')} and cuDNN {build.get('cudnn_version')}"
        )
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
