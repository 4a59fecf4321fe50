"""CIFAR-100 and CIFAR-10, python version: downloaded and cached through keras.datasets, or read
offline from `--data-dir` (the official archive, the folder holding it, or its extracted folder).

Every path ends in the one reader of the python-version pickles (restricted to what a numpy array
needs, so a tampered file cannot run code), which yields the images, labels, class names from the
meta file and, for CIFAR-100 fine labels, the fine -> superclass mapping. `load_cifar(config,
FORMATS[name])` returns the `Splits`; it is reached through `train.data.load_splits`, as when training:

    .venv/bin/python train/run.py --dataset cifar100 --data-dir ~/Downloads
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from train import splitting

if TYPE_CHECKING:
    from train.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR set's python version lives and which files it holds."""

    name: str  # what the user types: --dataset NAME
    title: str
    archive: str  # the official python-version archive
    folder: str  # the folder the archive holds
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    origin: str


#: The CIFAR sets that `--dataset` names, by that name.
FORMATS = {
    "cifar100": CifarFormat(
        "cifar100",
        "CIFAR-100",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
    "cifar10": CifarFormat(
        "cifar10",
        "CIFAR-10",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        tuple(f"data_batch_{number}" for number in range(1, 6)),
        "test_batch",
        "batches.meta",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
}
_CIFAR_SIDE = 32
_CIFAR_VALUES = _CIFAR_SIDE * _CIFAR_SIDE * 3  # one row of a CIFAR `data` array: R, G, B planes
# Other downloads from the CIFAR page, named so that a wrong file gets a helpful message.
_OTHER_CIFAR_FOLDERS = {
    "cifar-100-binary": "the CIFAR-100 binary version",
    "cifar-10-batches-bin": "the CIFAR-10 binary version",
    "cifar-10-batches-mat": "the CIFAR-10 MATLAB version",
    "cifar-100-matlab": "the CIFAR-100 MATLAB version",
}
# Only what rebuilding a numpy array (and a bytes object, in protocol-2 pickles written by Python 3)
# needs: a pickle is a program, and a tampered file must not run anything else.
_ALLOWED_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
    }
)


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
        raise splitting.DataError(
            f"{where} is not a CIFAR python-version pickle ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(content, dict):
        raise splitting.DataError(
            f"{where} is not a CIFAR python-version pickle (it holds a {type(content).__name__}, not a dict)"
        )
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in content.items()}


def _field(content: dict[str, Any], key: str, where: str) -> Any:
    if key not in content:
        raise splitting.DataError(
            f"{where} lacks the key {key!r} (it has {sorted(content)}): not the file expected here"
        )
    return content[key]


def _names(content: dict[str, Any], key: str, where: str) -> list[str]:
    names = _field(content, key, where)
    try:
        return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names]
    except (TypeError, UnicodeDecodeError) as error:
        raise splitting.DataError(f"{where}: {key!r} is not a list of names ({error})") from None


def _batch(
    content: dict[str, Any], label_keys: tuple[str, ...], class_counts: tuple[int, ...], where: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Images (N, 32, 32, 3) uint8 and one int64 label array per key from one CIFAR batch pickle."""
    data = np.asarray(_field(content, "data", where))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_VALUES:
        raise splitting.DataError(
            f"{where}: 'data' should be uint8 (N, {_CIFAR_VALUES}), got {data.dtype} {data.shape}"
        )
    images = data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    label_arrays = []
    for key, class_count in zip(label_keys, class_counts):
        try:
            labels = np.asarray(_field(content, key, where), dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as error:
            raise splitting.DataError(f"{where}: {key!r} is not a list of integers ({error})") from None
        if len(labels) != len(images):
            raise splitting.DataError(f"{where}: {len(labels)} {key!r} for {len(images)} images")
        if len(labels) and (labels.min() < 0 or labels.max() >= class_count):
            raise splitting.DataError(
                f"{where}: {key!r} outside 0..{class_count - 1} (the meta file names {class_count})"
            )
        label_arrays.append(labels)
    return np.ascontiguousarray(images), label_arrays


class _CifarSource:
    """Reads the files of one CIFAR python-version set from its archive or its extracted folder."""

    def __init__(self, cifar: CifarFormat, path: Path):
        self.cifar = cifar
        self.path = path
        needed = (*cifar.train_files, cifar.test_file, cifar.meta_file)
        if path.is_dir():
            missing = [name for name in needed if not (path / name).is_file()]
            if missing:
                raise splitting.DataError(
                    f"{path} lacks {', '.join(missing)}: not the extracted {cifar.title} "
                    f"python-version folder ({cifar.folder})"
                )
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
            raise splitting.DataError(
                f"cannot read {path}: not a readable tar.gz archive, or a corrupt or "
                f"truncated one ({type(error).__name__}: {error})"
            ) from None
        missing = [name for name in needed if name not in self.payloads]
        if missing:
            raise splitting.DataError(
                f"{path} is not the {cifar.title} python-version archive: it lacks "
                f"{', '.join(f'{cifar.folder}/{name}' for name in missing)}"
                f"{_what_it_holds(member_names)}"
            )

    def read(self, name: str) -> dict[str, Any]:
        if self.path.is_dir():
            where = str(self.path / name)
            try:
                payload = (self.path / name).read_bytes()
            except OSError as error:
                raise splitting.DataError(f"cannot read {where}: {error.strerror or error}") from None
            return _read_pickle(payload, where)
        return _read_pickle(self.payloads.pop(name), f"{self.path} (member {self.cifar.folder}/{name})")


def _what_it_holds(member_names: list[str]) -> str:
    """A hint about a foreign archive: which CIFAR download it is, or what it holds."""
    tops = {name.split("/", 1)[0] for name in member_names}
    for folder, title in {
        **{
            cifar.folder: f"the {cifar.title} python version (use --dataset {cifar.name})" for cifar in FORMATS.values()
        },
        **_OTHER_CIFAR_FOLDERS,
    }.items():
        if folder in tops:
            return f"; it looks like {title}"
    return f"; it holds {splitting.listing(sorted(member_names)) or 'no files'}"


def _find_cifar(cifar: CifarFormat, data_dir: Path) -> Path:
    """The extracted folder or the archive under `data_dir` (which may also be either itself)."""
    if data_dir.is_file():
        return data_dir
    if not data_dir.is_dir():
        raise splitting.DataError(f"--data-dir {data_dir} does not exist")
    if (data_dir / cifar.meta_file).is_file() or (data_dir / cifar.test_file).is_file():
        return data_dir
    for candidate in (data_dir / cifar.folder, data_dir / f"{cifar.folder}-target" / cifar.folder):
        if candidate.is_dir():
            return candidate
    if (data_dir / cifar.archive).is_file():
        return data_dir / cifar.archive
    raise splitting.DataError(
        f"--data-dir {data_dir} holds neither {cifar.archive} nor its extracted folder "
        f"{cifar.folder}/ (download the python version from "
        "https://www.cs.toronto.edu/~kriz/cifar.html)"
    )


def _load_cifar_files(cifar: CifarFormat, path: Path, label_mode: str):
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
    train_labels = [
        np.concatenate([labels[position] for _, labels in train_parts]) for position in range(len(label_keys))
    ]
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
            raise splitting.DataError(
                f"{where}: fine class {fine_names[fine_label]!r} {problem}; expected exactly one superclass"
            )
        mapping[fine_label] = superclasses[0]
    return mapping


def _keras_cache_folder(cifar: CifarFormat) -> Path:
    """Where keras.datasets extracted the archive: <KERAS_HOME or ~/.keras>/datasets/..., /tmp/.keras if unwritable."""
    # keras' get_file caches under keras_home() ($KERAS_HOME or ~/.keras, read when keras is imported),
    # or /tmp/.keras when that is not writable. keras_home() is private, hence the fallbacks.
    homes = []
    try:
        from keras.src.backend import config as keras_config  # Keras only when CIFAR is downloaded.

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
    raise splitting.DataError(
        f"keras.datasets loaded {cifar.title} but its meta file (the class names) is in "
        f"none of {', '.join(map(str, candidates))}; pass --data-dir with the extracted folder"
    )


def _download_cifar(cifar: CifarFormat, label_mode: str) -> Path:
    """Download and cache the archive through keras.datasets; the extracted folder it left behind."""
    advice = (
        f"Pass --data-dir DIR holding {cifar.archive} (the python version from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted folder, or train on the "
        f"generated, offline dataset with --preset smoke."
    )
    try:
        import keras  # Keras only when CIFAR is downloaded; --data-dir reads files alone.
    except ImportError as error:
        raise splitting.DataError(f"keras is needed to download {cifar.title} ({error}). {advice}") from None
    loader = keras.datasets.cifar100 if cifar.name == "cifar100" else keras.datasets.cifar10
    try:
        # Downloads (once), checks the archive's hash and extracts it into the keras cache. Its arrays
        # are dropped: the cached files are read again below (about 2 s), so that images, labels, class
        # names and superclasses all come from the one reader that --data-dir uses and the tests cover.
        arguments = {"label_mode": label_mode} if cifar.name == "cifar100" else {}
        loader.load_data(**arguments)
    except Exception as error:  # keras raises a bare Exception for a failed download.
        raise splitting.DataError(
            f"cannot download or read {cifar.title} through keras.datasets from "
            f"{cifar.origin} ({type(error).__name__}: {error}). Offline? {advice}"
        ) from None
    return _keras_cache_folder(cifar)


def load_cifar(config: TrainConfig, cifar: CifarFormat) -> splitting.Splits:
    """`cifar` (one of `FORMATS`) from `config.data_dir`, or downloaded when that is empty, as `Splits`."""
    if config.data_dir:
        path = _find_cifar(cifar, Path(config.data_dir).expanduser())
    else:
        path = _download_cifar(cifar, config.label_mode)
    train_images, train_labels, test_images, test_labels, names, superclasses, superclass_of = _load_cifar_files(
        cifar, path, config.label_mode
    )
    return splitting.split_train(
        config,
        train_images,
        train_labels,
        test_images,
        test_labels,
        labels=names,
        dataset=cifar.name,
        superclasses=superclasses,
        superclass_of=superclass_of,
    )
