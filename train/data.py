"""The training data: CIFAR-100, CIFAR-10, the generated smoke set, or a folder of images.

`load_splits(config)` returns a `Splits` with uint8 NHWC images at their native
size and int64 labels, the class names in output order (read from the data:
CIFAR's meta file, the folder names, or `SMOKE_CLASSES`), and a stratified
validation split carved from the training set. The test split is kept for the
final report only.

    .venv/bin/python -c "from train import data, config; print(data.load_splits(config.TrainConfig(dataset='smoke')))"
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import sys
import tarfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

if TYPE_CHECKING:
    from train.config import TrainConfig


class DataError(ValueError):
    """The data cannot be loaded; the message names the file or folder and the problem."""


@dataclasses.dataclass
class Splits:
    """Train / validation / test arrays: uint8 images (N, H, W, 3) and int64 labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    labels: list[str]
    """Class names in the model's output order (what `labels.txt` holds)."""
    superclasses: Optional[list[str]] = None
    """CIFAR-100 fine labels only: the 20 superclass names."""
    superclass_of: Optional[np.ndarray] = None
    """CIFAR-100 fine labels only: int64 array, fine class index -> superclass index."""
    dataset: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, 3): the native image size, which the model takes as input."""
        return tuple(int(side) for side in self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Splits(dataset={self.dataset!r}, classes={self.num_classes}, input_shape={self.input_shape}, "
                f"train={len(self.train_labels)}, val={len(self.val_labels)}, test={len(self.test_labels)})")


# ---------------------------------------------------------------------------------------------
# Stratified splitting and sampling


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about `fraction` of every class: returns sorted (kept, held) index arrays.

    Each class holds out round(count * fraction) of its examples, but a class with
    two or more examples keeps at least one on each side whenever fraction > 0
    (a class with one example stays in `kept`). Deterministic for a given seed.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    generator = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        indices = generator.permutation(np.flatnonzero(labels == label))
        count = len(indices)
        held_count = int(np.floor(count * fraction + 0.5))
        if fraction > 0 and count >= 2:
            held_count = min(max(held_count, 1), count - 1)
        held.append(indices[:held_count])
        kept.append(indices[held_count:])
    return _sorted_indices(kept), _sorted_indices(held)


def stratified_sample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` sorted indices in the classes' proportions, every class at least once if count allows.

    Used for int8 calibration. Returns every index when count >= len(labels).
    """
    labels = np.asarray(labels).reshape(-1)
    if count >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    generator = np.random.default_rng(seed)
    classes, class_counts = np.unique(labels, return_counts=True)
    if count < len(classes):
        # Too few to cover every class: one example from each of `count` random classes.
        quotas = np.zeros(len(classes), dtype=np.int64)
        quotas[generator.choice(len(classes), size=count, replace=False)] = 1
    else:
        # Proportional shares rounded down, at least one per class, then corrected to `count` by
        # largest remainder (adding) or smallest remainder (taking away), within each class's size.
        exact = count * class_counts / class_counts.sum()
        quotas = np.maximum(np.floor(exact).astype(np.int64), 1)
        while quotas.sum() != count:
            remainder = exact - quotas
            if quotas.sum() < count:
                candidates = np.flatnonzero(quotas < class_counts)
                quotas[candidates[np.argmax(remainder[candidates])]] += 1
            else:
                candidates = np.flatnonzero(quotas > 1)
                quotas[candidates[np.argmin(remainder[candidates])]] -= 1
    chosen = [generator.permutation(np.flatnonzero(labels == label))[:quota]
              for label, quota in zip(classes, quotas)]
    return _sorted_indices(chosen)


def _sorted_indices(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def _split_train(config, train_images, train_labels, test_images, test_labels, labels, dataset,
                 superclasses=None, superclass_of=None) -> Splits:
    """Carve the stratified validation split out of the training set and assemble the `Splits`."""
    kept, held = stratified_split(train_labels, config.val_split, config.seed)
    return Splits(train_images=train_images[kept], train_labels=train_labels[kept].astype(np.int64),
                  val_images=train_images[held], val_labels=train_labels[held].astype(np.int64),
                  test_images=test_images, test_labels=np.asarray(test_labels, dtype=np.int64),
                  labels=list(labels), superclasses=superclasses, superclass_of=superclass_of,
                  dataset=dataset)


# ---------------------------------------------------------------------------------------------
# The smoke dataset: generated, offline, deterministic per seed, learnable in minutes on a CPU.

#: The smoke classes, in output order. Each is a pattern or shape that stays in its class under a
#: horizontal flip (the training augmentation), drawn with random colours, position, size and noise.
SMOKE_CLASSES = ("horizontal_stripes", "vertical_stripes", "diagonal_stripes", "checkerboard", "dots",
                 "circle", "ring", "square", "triangle", "cross")
SMOKE_SIZE = 32  # pixels per side, as CIFAR
_NOISE_STD_MAX = 18.0  # pixel-value noise, uniform per image in [0, max]; keeps the task from being trivial
_MIN_CHANNEL_CONTRAST = 90  # the smallest difference, per channel, between shape and background colour


def make_smoke(samples_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate the smoke dataset: (images uint8 (N, 32, 32, 3), labels int64 (N,), class names).

    N = samples_per_class * len(SMOKE_CLASSES), shuffled. The same seed gives the same arrays.
    """
    if samples_per_class < 1:
        raise DataError(f"smoke_samples_per_class must be >= 1, got {samples_per_class}")
    generator = np.random.default_rng(seed)
    count = samples_per_class
    rows, columns = np.mgrid[0:SMOKE_SIZE, 0:SMOKE_SIZE].astype(np.float32)
    rows, columns = rows[None], columns[None]  # broadcast against per-image parameters (n, 1, 1)

    def uniform(low, high):
        return generator.uniform(low, high, size=(count, 1, 1)).astype(np.float32)

    def stripes(angle_degrees):
        angle = np.deg2rad(angle_degrees)
        along = rows * np.cos(angle) + columns * np.sin(angle)
        period = uniform(4.0, 9.0)
        return np.mod(along + uniform(0.0, 9.0), period) < period * uniform(0.35, 0.65)

    def centre(margin):
        return uniform(margin, SMOKE_SIZE - 1 - margin), uniform(margin, SMOKE_SIZE - 1 - margin)

    def shape_offsets(margin):
        centre_row, centre_column = centre(margin)
        return rows - centre_row, columns - centre_column

    def horizontal_stripes():
        return stripes(uniform(-15, 15))

    def vertical_stripes():
        return stripes(uniform(75, 105))

    def diagonal_stripes():
        # Both diagonals belong to the class, so a flipped image stays in it.
        sign = np.where(generator.random((count, 1, 1)) < 0.5, -1.0, 1.0)
        return stripes(sign * uniform(35, 55))

    def checkerboard():
        cell = uniform(3.0, 6.5)
        return (np.floor((rows + uniform(0, 7)) / cell) + np.floor((columns + uniform(0, 7)) / cell)) % 2 == 1

    def dots():
        spacing = uniform(6.0, 9.0)
        row_phase = np.mod(rows + uniform(0, 9), spacing) - spacing / 2
        column_phase = np.mod(columns + uniform(0, 9), spacing) - spacing / 2
        return row_phase ** 2 + column_phase ** 2 < uniform(1.3, 2.2) ** 2

    def circle():
        dy, dx = shape_offsets(10)
        return dy ** 2 + dx ** 2 < uniform(5.0, 10.0) ** 2

    def ring():
        dy, dx = shape_offsets(11)
        outer = uniform(7.5, 11.5)
        distance = np.sqrt(dy ** 2 + dx ** 2)
        return (distance < outer) & (distance > outer - uniform(1.8, 3.2))

    def square():
        dy, dx = shape_offsets(10)
        return np.maximum(np.abs(dy), np.abs(dx)) < uniform(4.5, 9.5)

    def triangle():
        # Apex up, base down: symmetric about its vertical axis.
        dy, dx = shape_offsets(10)
        half_height = uniform(6.0, 10.0)
        from_apex = dy + half_height
        return (from_apex >= 0) & (dy <= half_height) & (np.abs(dx) <= from_apex * uniform(0.55, 0.9))

    def cross():
        dy, dx = shape_offsets(10)
        arm, thickness = uniform(6.0, 10.5), uniform(1.2, 2.6)
        return (((np.abs(dx) < thickness) & (np.abs(dy) < arm))
                | ((np.abs(dy) < thickness) & (np.abs(dx) < arm)))

    drawers = {"horizontal_stripes": horizontal_stripes, "vertical_stripes": vertical_stripes,
               "diagonal_stripes": diagonal_stripes, "checkerboard": checkerboard, "dots": dots,
               "circle": circle, "ring": ring, "square": square, "triangle": triangle, "cross": cross}
    masks = np.concatenate([drawers[name]() for name in SMOKE_CLASSES])[..., None]
    labels = np.repeat(np.arange(len(SMOKE_CLASSES), dtype=np.int64), count)

    total = len(labels)
    background = generator.integers(0, 256, size=(total, 1, 1, 3))
    # The foreground differs from the background by at least the contrast in every channel (mod 256).
    offset = generator.integers(_MIN_CHANNEL_CONTRAST, 256 - _MIN_CHANNEL_CONTRAST + 1, size=(total, 1, 1, 3))
    foreground = (background + offset) % 256
    pixels = np.where(masks, foreground, background).astype(np.float32)
    noise_std = generator.uniform(0.0, _NOISE_STD_MAX, size=(total, 1, 1, 1)).astype(np.float32)
    pixels += generator.standard_normal(pixels.shape, dtype=np.float32) * noise_std
    images = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

    order = generator.permutation(total)
    return images[order], labels[order], list(SMOKE_CLASSES)


def _load_smoke(config) -> Splits:
    images, labels, names = make_smoke(config.smoke_samples_per_class, config.seed)
    # The smoke set is one generated pool: the test split is carved from it like a single-tree folder.
    kept, test = stratified_split(labels, config.test_split, config.seed)
    if len(test) == 0:
        raise DataError("the smoke dataset needs test_split > 0 to have a test split")
    return _split_train(config, images[kept], labels[kept], images[test], labels[test], names, "smoke")


# ---------------------------------------------------------------------------------------------
# CIFAR, python version: keras.datasets (download and cache) or offline from --data-dir


@dataclasses.dataclass(frozen=True)
class _CifarFormat:
    name: str  # what the user types: --dataset NAME
    title: str
    archive: str  # the official python-version archive
    folder: str  # the folder the archive holds
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    origin: str


_CIFAR = {
    "cifar100": _CifarFormat("cifar100", "CIFAR-100", "cifar-100-python.tar.gz", "cifar-100-python",
                             ("train",), "test", "meta",
                             "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "cifar10": _CifarFormat("cifar10", "CIFAR-10", "cifar-10-python.tar.gz", "cifar-10-batches-py",
                            tuple(f"data_batch_{number}" for number in range(1, 6)), "test_batch",
                            "batches.meta", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
}
_CIFAR_SIDE = 32
_CIFAR_VALUES = _CIFAR_SIDE * _CIFAR_SIDE * 3  # one row of a CIFAR `data` array: R, G, B planes
# Other downloads from the CIFAR page, named so that a wrong file gets a helpful message.
_OTHER_CIFAR_FOLDERS = {"cifar-100-binary": "the CIFAR-100 binary version", "cifar-10-batches-bin":
                        "the CIFAR-10 binary version", "cifar-10-batches-mat": "the CIFAR-10 MATLAB version",
                        "cifar-100-matlab": "the CIFAR-100 MATLAB version"}
# Only what rebuilding a numpy array (and a bytes object, in protocol-2 pickles written by Python 3)
# needs: a pickle is a program, and a tampered file must not run anything else.
_ALLOWED_PICKLE_GLOBALS = frozenset({("numpy", "ndarray"), ("numpy", "dtype"),
                                     ("numpy.core.multiarray", "_reconstruct"),
                                     ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it references {module}.{name}, which a CIFAR pickle never does")


def _read_pickle(payload: bytes, where: str) -> dict[str, Any]:
    """Unpickle one CIFAR file (Python 2 pickles: str keys arrive as bytes) into a dict with str keys."""
    try:
        content = _RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except Exception as error:  # Any unpickling failure means the same thing to the user.
        raise DataError(f"{where} is not a CIFAR python-version pickle ({type(error).__name__}: {error})") from None
    if not isinstance(content, dict):
        raise DataError(f"{where} is not a CIFAR python-version pickle (it holds a {type(content).__name__}, "
                        "not a dict)")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def _field(content: dict[str, Any], key: str, where: str) -> Any:
    if key not in content:
        raise DataError(f"{where} lacks the key {key!r} (it has {sorted(content)}): not the file expected here")
    return content[key]


def _names(content: dict[str, Any], key: str, where: str) -> list[str]:
    names = _field(content, key, where)
    try:
        return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]
    except (TypeError, UnicodeDecodeError) as error:
        raise DataError(f"{where}: {key!r} is not a list of names ({error})") from None


def _batch(content: dict[str, Any], label_keys: tuple[str, ...], class_counts: tuple[int, ...],
           where: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Images (N, 32, 32, 3) uint8 and one int64 label array per key from one CIFAR batch pickle."""
    data = np.asarray(_field(content, "data", where))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_VALUES:
        raise DataError(f"{where}: 'data' should be uint8 (N, {_CIFAR_VALUES}), got {data.dtype} {data.shape}")
    images = data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    label_arrays = []
    for key, class_count in zip(label_keys, class_counts):
        try:
            labels = np.asarray(_field(content, key, where), dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as error:
            raise DataError(f"{where}: {key!r} is not a list of integers ({error})") from None
        if len(labels) != len(images):
            raise DataError(f"{where}: {len(labels)} {key!r} for {len(images)} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= class_count):
            raise DataError(f"{where}: {key!r} outside 0..{class_count - 1} (the meta file names {class_count})")
        label_arrays.append(labels)
    return np.ascontiguousarray(images), label_arrays


class _CifarSource:
    """Reads the files of one CIFAR python-version set from its archive or its extracted folder."""

    def __init__(self, cifar: _CifarFormat, path: Path):
        self.cifar = cifar
        self.path = path
        needed = (*cifar.train_files, cifar.test_file, cifar.meta_file)
        if path.is_dir():
            missing = [name for name in needed if not (path / name).is_file()]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}: not the extracted {cifar.title} "
                                f"python-version folder ({cifar.folder})")
            return
        # A tar.gz is read front to back once: the wanted members are kept in memory (about 180 MB).
        self.payloads: dict[str, bytes] = {}
        member_names = []
        try:
            with tarfile.open(path, "r:*") as archive:
                for member in archive:
                    member_names.append(member.name)
                    folder, _, name = member.name.removeprefix("./").partition("/")
                    if member.isfile() and folder == cifar.folder and name in needed:
                        self.payloads[name] = archive.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise DataError(f"cannot read {path}: not a readable tar.gz archive, or a corrupt or truncated one "
                            f"({type(error).__name__}: {error})") from None
        missing = [name for name in needed if name not in self.payloads]
        if missing:
            raise DataError(f"{path} is not the {cifar.title} python-version archive: it lacks "
                            f"{', '.join(f'{cifar.folder}/{name}' for name in missing)}"
                            f"{_what_it_holds(member_names)}")

    def read(self, name: str) -> dict[str, Any]:
        if self.path.is_dir():
            where = str(self.path / name)
            try:
                payload = (self.path / name).read_bytes()
            except OSError as error:
                raise DataError(f"cannot read {where}: {error.strerror or error}") from None
            return _read_pickle(payload, where)
        return _read_pickle(self.payloads.pop(name), f"{self.path} (member {self.cifar.folder}/{name})")


def _what_it_holds(member_names: list[str]) -> str:
    """A hint about a foreign archive: which CIFAR download it is, or what it holds."""
    tops = {name.split("/", 1)[0] for name in member_names}
    for folder, title in {**{cifar.folder: f"the {cifar.title} python version (use --dataset {cifar.name})"
                             for cifar in _CIFAR.values()}, **_OTHER_CIFAR_FOLDERS}.items():
        if folder in tops:
            return f"; it looks like {title}"
    return f"; it holds {_listing(sorted(member_names)) or 'no files'}"


def _find_cifar(cifar: _CifarFormat, data_dir: Path) -> Path:
    """The extracted folder or the archive under `data_dir` (which may also be either itself)."""
    if data_dir.is_file():
        return data_dir
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} does not exist")
    if (data_dir / cifar.meta_file).is_file() or (data_dir / cifar.test_file).is_file():
        return data_dir
    for candidate in (data_dir / cifar.folder, data_dir / f"{cifar.folder}-target" / cifar.folder):
        if candidate.is_dir():
            return candidate
    if (data_dir / cifar.archive).is_file():
        return data_dir / cifar.archive
    raise DataError(f"--data-dir {data_dir} holds neither {cifar.archive} nor its extracted folder {cifar.folder}/ "
                    f"(download the python version from https://www.cs.toronto.edu/~kriz/cifar.html)")


def _load_cifar_files(cifar: _CifarFormat, path: Path, label_mode: str):
    """(train images, train labels, test images, test labels, names, superclasses, superclass_of)."""
    source = _CifarSource(cifar, path)
    meta = source.read(cifar.meta_file)
    if cifar.name == "cifar10":
        names = _names(meta, "label_names", f"{path} ({cifar.meta_file})")
        label_keys, counts = ("labels",), (len(names),)
    else:
        where = f"{path} ({cifar.meta_file})"
        fine_names, coarse_names = _names(meta, "fine_label_names", where), _names(meta, "coarse_label_names", where)
        label_keys, counts = ("fine_labels", "coarse_labels"), (len(fine_names), len(coarse_names))
    train_parts = [_batch(source.read(name), label_keys, counts, f"{path} ({name})") for name in cifar.train_files]
    test_images, test_labels = _batch(source.read(cifar.test_file), label_keys, counts, f"{path} ({cifar.test_file})")
    train_images = np.concatenate([images for images, _ in train_parts])
    train_labels = [np.concatenate([labels[position] for _, labels in train_parts]) for position in range(len(label_keys))]
    if cifar.name == "cifar10":
        return train_images, train_labels[0], test_images, test_labels[0], names, None, None
    if label_mode == "coarse":
        return train_images, train_labels[1], test_images, test_labels[1], coarse_names, None, None
    superclass_of = _superclass_of(train_labels[0], train_labels[1], fine_names, f"{path} ({cifar.train_files[0]})")
    return train_images, train_labels[0], test_images, test_labels[0], fine_names, coarse_names, superclass_of


def _superclass_of(fine: np.ndarray, coarse: np.ndarray, fine_names: list[str], where: str) -> np.ndarray:
    """Fine class index -> superclass index, read from the training set's paired labels."""
    mapping = np.full(len(fine_names), -1, dtype=np.int64)
    for fine_label in range(len(fine_names)):
        superclasses = np.unique(coarse[fine == fine_label])
        if len(superclasses) != 1:
            problem = "never appears" if len(superclasses) == 0 else f"has superclasses {superclasses.tolist()}"
            raise DataError(f"{where}: fine class {fine_names[fine_label]!r} {problem}; expected exactly one superclass")
        mapping[fine_label] = superclasses[0]
    return mapping


def _keras_cache_folder(cifar: _CifarFormat) -> Path:
    """Where keras.datasets extracted the archive: <KERAS_HOME or ~/.keras>/datasets/..., /tmp/.keras if unwritable."""
    # keras' get_file caches under keras_home() ($KERAS_HOME or ~/.keras, read when keras is imported),
    # or /tmp/.keras when that is not writable. keras_home() is private, hence the fallbacks.
    homes = []
    try:
        from keras.src.backend import config as keras_config
        homes.append(Path(keras_config.keras_home()).expanduser())
    except (ImportError, AttributeError):
        pass
    homes += [Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser(), Path("/tmp/.keras")]
    candidates = []
    for home in dict.fromkeys(homes):
        # Keras >= 3.6 extracts into "<folder>-target/<folder>"; older versions into "<folder>".
        candidates += [home / "datasets" / f"{cifar.folder}-target" / cifar.folder, home / "datasets" / cifar.folder]
    for candidate in candidates:
        if (candidate / cifar.meta_file).is_file():
            return candidate
    raise DataError(f"keras.datasets loaded {cifar.title} but its meta file (the class names) is in none of "
                    f"{', '.join(map(str, candidates))}; pass --data-dir with the extracted folder")


def _download_cifar(cifar: _CifarFormat, label_mode: str) -> Path:
    """Download and cache the archive through keras.datasets; the extracted folder it left behind."""
    advice = (f"Pass --data-dir DIR holding {cifar.archive} (the python version from "
              f"https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted folder, or train on the "
              f"generated, offline dataset with --preset smoke.")
    try:
        import keras
    except ImportError as error:
        raise DataError(f"keras is needed to download {cifar.title} ({error}). {advice}") from None
    loader = keras.datasets.cifar100 if cifar.name == "cifar100" else keras.datasets.cifar10
    try:
        # Downloads (once), checks the archive's hash and extracts it into the keras cache. Its arrays
        # are dropped: the cached files are read again below (about 2 s), so that images, labels, class
        # names and superclasses all come from the one reader that --data-dir uses and the tests cover.
        arguments = {"label_mode": label_mode} if cifar.name == "cifar100" else {}
        loader.load_data(**arguments)
    except Exception as error:  # keras raises a bare Exception for a failed download.
        raise DataError(f"cannot download or read {cifar.title} through keras.datasets from {cifar.origin} "
                        f"({type(error).__name__}: {error}). Offline? {advice}") from None
    return _keras_cache_folder(cifar)


def _load_cifar(config, cifar: _CifarFormat) -> Splits:
    if config.data_dir:
        path = _find_cifar(cifar, Path(config.data_dir).expanduser())
    else:
        path = _download_cifar(cifar, config.label_mode)
    train_images, train_labels, test_images, test_labels, names, superclasses, superclass_of = \
        _load_cifar_files(cifar, path, config.label_mode)
    return _split_train(config, train_images, train_labels, test_images, test_labels, names, cifar.name,
                        superclasses=superclasses, superclass_of=superclass_of)


# ---------------------------------------------------------------------------------------------
# A folder of images: one sub-folder per class, with train/ and test/ sub-trees or a single tree

_LISTED_PROBLEMS = 5  # files named in an error or note before "and N more"


def _class_folders(root: Path) -> list[Path]:
    return sorted((entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
                  key=lambda entry: entry.name)


def _image_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) anywhere under `folder`, by extension; hidden files are ignored."""
    from PIL import Image  # Pillow's own list of the extensions it can open.
    extensions = {extension.lower() for extension in Image.registered_extensions()}
    images, others = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            (images if path.suffix.lower() in extensions else others).append(path)
    return images, others


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED_PROBLEMS])
    return shown + (f" and {len(items) - _LISTED_PROBLEMS} more" if len(items) > _LISTED_PROBLEMS else "")


def _scan_tree(root: Path, class_names: Optional[list[str]] = None) -> tuple[list[str], list[Path], list[int]]:
    """(class names, image paths, label per path) of one tree of class folders."""
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    folders = _class_folders(root)
    names = [folder.name for folder in folders]
    if class_names is None:
        if not folders:
            raise DataError(f"{root} has no class sub-folders: expected one sub-folder of images per class "
                            "(or train/ and test/ folders that hold them)")
        if len(folders) == 1:
            raise DataError(f"{root} has a single class folder ({names[0]}): a classifier needs two or more")
        class_names = names
    else:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DataError(f"{root} has class folders that the training folder lacks: {_listing(unknown)}")
    paths, labels, empty, skipped = [], [], [], []
    for folder in folders:
        images, others = _image_files(folder)
        if not images:
            empty.append(folder.name)
        paths += images
        labels += [class_names.index(folder.name)] * len(images)
        skipped += [str(other.relative_to(root)) for other in others]
    if not paths:
        raise DataError(f"{root} holds no image files in its class folders")
    if empty:
        raise DataError(f"{root}: {len(empty)} class folder(s) hold no images: {_listing(empty)}")
    if skipped:
        print(f"note: skipped {len(skipped)} file(s) under {root} that are not images by their extension: "
              f"{_listing(skipped)}", file=sys.stderr)
    return class_names, paths, labels


def _read_images(paths: list[Path], root: Path) -> np.ndarray:
    """Decode every image; images not at the most common size are centre-cropped and resized to it."""
    from edge import preprocess
    decoded, unreadable = [], []
    for path in paths:
        try:
            decoded.append(np.asarray(preprocess.load_image(path)))
        except preprocess.ImageError as error:
            unreadable.append(f"{path.relative_to(root)} ({error.reason})")
    if unreadable:
        unreadable.sort()
        raise DataError(f"{len(unreadable)} of {len(paths)} image files under {root} cannot be read: "
                        f"{_listing(unreadable)}. Remove or replace them.")
    sizes = collections.Counter(image.shape[:2] for image in decoded)
    (height, width), _ = sizes.most_common(1)[0]
    odd = [index for index, image in enumerate(decoded) if image.shape[:2] != (height, width)]
    if odd:
        examples = [f"{paths[index].relative_to(root)} ({decoded[index].shape[1]}x{decoded[index].shape[0]})"
                    for index in odd]
        print(f"note: {len(odd)} of {len(paths)} images under {root} are not {width}x{height} (the most common "
              f"size); they were centre-cropped and resized to it: {_listing(examples)}", file=sys.stderr)
        for index in odd:
            decoded[index] = preprocess.prepare_image(decoded[index], (height, width))
    return np.stack(decoded).astype(np.uint8)


def _load_folder(config, root: Path) -> Splits:
    if (root / "train").is_dir() and (root / "test").is_dir():
        names, train_paths, train_labels = _scan_tree(root / "train")
        _, test_paths, test_labels = _scan_tree(root / "test", class_names=names)
    else:
        names, paths, labels = _scan_tree(root)
        kept, held = stratified_split(np.asarray(labels), config.test_split, config.seed)
        if len(held) == 0:
            raise DataError(f"{root} is a single tree of class folders: it needs test_split > 0 to hold out a "
                            "test split (or train/ and test/ sub-folders)")
        train_paths, train_labels = [paths[index] for index in kept], [labels[index] for index in kept]
        test_paths, test_labels = [paths[index] for index in held], [labels[index] for index in held]
    # Decoded together so that train and test share the most common size.
    images = _read_images(train_paths + test_paths, root)
    train_count = len(train_paths)
    return _split_train(config, images[:train_count], np.asarray(train_labels, dtype=np.int64),
                        images[train_count:], np.asarray(test_labels, dtype=np.int64), names, str(root))


# ---------------------------------------------------------------------------------------------
# Dispatch


def load_splits(config: "TrainConfig") -> Splits:
    """Load `config.dataset` (cifar100, cifar10, smoke, or a folder) into train/val/test `Splits`."""
    dataset = str(config.dataset)
    if config.label_mode == "coarse" and dataset != "cifar100":
        raise DataError(f"label_mode coarse (the 20 superclasses) exists for cifar100 only, not {dataset!r}")
    if dataset == "smoke":
        return _load_smoke(config)
    if dataset in _CIFAR:
        return _load_cifar(config, _CIFAR[dataset])
    if Path(dataset).expanduser().is_dir():
        return _load_folder(config, Path(dataset).expanduser())
    if "/" in dataset or "\\" in dataset or dataset.startswith((".", "~")):
        raise DataError(f"the image folder {dataset} does not exist (or is not a folder)")
    raise DataError(f"unknown dataset {dataset!r}: expected cifar100, cifar10, smoke or a folder of images "
                    "with one sub-folder per class")
