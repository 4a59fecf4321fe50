"""Tests of the training data through its interface, train/data.py: CIFAR (train/cifar.py) from small
files in the real python-pickle layout, image folders (train/image_folders.py), stratified splits
(train/splitting.py) and the smoke dataset (train/smoke.py). No network.

    .venv/bin/pytest tests/test_data.py -x -q
"""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import preprocess
from train import data
from train.config import TrainConfig

# Tiny stand-ins for the real sets: few classes, few images per class, the real file layout.
CIFAR100_FINE = ["apple", "aquarium_fish", "baby", "bear", "beaver", "bed"]
CIFAR100_COARSE = ["fruit_and_vegetables", "fish", "people", "large_carnivores"]
CIFAR100_SUPERCLASS_OF = [0, 1, 2, 3, 3, 2]  # the fine -> coarse pairing the tiny train file encodes
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat"]
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3


class _Python2Pickler(pickle._Pickler):
    """Writes byte strings as Python 2 did (BINSTRING opcodes), as in the real CIFAR files.

    Python 3's protocol 2 would instead write `_codecs.encode(...)` calls, which keras'
    restricted unpickler (rightly) refuses, so plain `pickle.dumps` would not be the real format.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, value: bytes) -> None:
        if len(value) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(value)]) + value)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(value)) + value)
        self.memoize(value)

    dispatch[bytes] = save_bytes


def _pickle(content: dict) -> bytes:
    """A Python 2 style protocol-2 pickle with byte-string keys and names, like the real files."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(content)
    # Python 2's numpy named its module numpy.core; GLOBAL opcodes are newline-terminated text.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _cifar_batch(labels: dict[bytes, list[int]], seed: int) -> tuple[dict, np.ndarray]:
    """A batch dict in the real layout, and the NHWC images its `data` rows encode."""
    count = len(next(iter(labels.values())))
    images = np.random.default_rng(seed).integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
    rows = images.transpose(0, 3, 1, 2).reshape(count, 3072)  # R plane, G plane, B plane, row-major
    content = {
        b"batch_label": b"testing batch",
        b"data": rows,
        b"filenames": [f"image_{index}.png".encode() for index in range(count)],
        **labels,
    }
    return content, images


def _cifar100_files(seed: int = 0) -> tuple[dict[str, bytes], dict]:
    fine_train = np.repeat(np.arange(len(CIFAR100_FINE)), TRAIN_PER_CLASS)
    fine_test = np.repeat(np.arange(len(CIFAR100_FINE)), TEST_PER_CLASS)
    coarse = np.asarray(CIFAR100_SUPERCLASS_OF)
    train, train_images = _cifar_batch(
        {b"fine_labels": fine_train.tolist(), b"coarse_labels": coarse[fine_train].tolist()}, seed
    )
    test, test_images = _cifar_batch(
        {b"fine_labels": fine_test.tolist(), b"coarse_labels": coarse[fine_test].tolist()}, seed + 1
    )
    meta = {
        b"fine_label_names": [name.encode() for name in CIFAR100_FINE],
        b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE],
    }
    files = {"train": _pickle(train), "test": _pickle(test), "meta": _pickle(meta)}
    truth = dict(train_images=train_images, train_fine=fine_train, test_images=test_images, test_fine=fine_test)
    return files, truth


def _cifar10_files(seed: int = 0) -> tuple[dict[str, bytes], dict]:
    files, train_images, train_labels = {}, [], []
    for number in range(1, 6):
        labels = np.tile(np.arange(len(CIFAR10_NAMES)), 2)
        batch, images = _cifar_batch({b"labels": labels.tolist()}, seed + number)
        files[f"data_batch_{number}"] = _pickle(batch)
        train_images.append(images)
        train_labels.append(labels)
    test_labels = np.arange(len(CIFAR10_NAMES))
    test, test_images = _cifar_batch({b"labels": test_labels.tolist()}, seed + 10)
    files["test_batch"] = _pickle(test)
    files["batches.meta"] = _pickle(
        {b"label_names": [name.encode() for name in CIFAR10_NAMES], b"num_cases_per_batch": 8, b"num_vis": 3072}
    )
    truth = dict(
        train_images=np.concatenate(train_images),
        train_labels=np.concatenate(train_labels),
        test_images=test_images,
        test_labels=test_labels,
    )
    return files, truth


def _write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, payload in files.items():
        (folder / name).write_bytes(payload)
    return folder


def _write_archive(path: Path, folder_name: str, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in files.items():
            member = tarfile.TarInfo(f"{folder_name}/{name}")
            member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload))
    return path


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{"seed": 0, **overrides})


def _all_images_and_labels(splits: data.Splits) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation together, in a canonical order, to compare with what was written."""
    images = np.concatenate([splits.train_images, splits.val_images])
    labels = np.concatenate([splits.train_labels, splits.val_labels])
    order = np.lexsort(images.reshape(len(images), -1)[:, :8].T[::-1])
    return images[order], labels[order]


def _canonical(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort(images.reshape(len(images), -1)[:, :8].T[::-1])
    return images[order], labels[order]


# ---------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("layout", ["archive", "extracted", "extracted-folder-itself", "archive-file-itself"])
def test_cifar100_loads_from_data_dir(tmp_path, layout):
    files, truth = _cifar100_files()
    if layout in ("archive", "archive-file-itself"):
        archive = _write_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
        data_dir = archive if layout == "archive-file-itself" else tmp_path
    else:
        folder = _write_folder(tmp_path / "cifar-100-python", files)
        data_dir = folder if layout == "extracted-folder-itself" else tmp_path

    splits = data.load_splits(_config(dataset="cifar100", data_dir=str(data_dir), val_split=0.2))

    assert splits.labels == CIFAR100_FINE
    assert splits.superclasses == CIFAR100_COARSE
    assert splits.superclass_of.tolist() == CIFAR100_SUPERCLASS_OF
    assert splits.dataset == "cifar100"
    assert splits.input_shape == (32, 32, 3) and splits.num_classes == len(CIFAR100_FINE)
    for images, labels in [
        (splits.train_images, splits.train_labels),
        (splits.val_images, splits.val_labels),
        (splits.test_images, splits.test_labels),
    ]:
        assert images.dtype == np.uint8 and labels.dtype == np.int64 and images.shape[1:] == (32, 32, 3)
    # Pixels arrive NHWC exactly as written (the pickle rows are channel planes).
    np.testing.assert_array_equal(splits.test_images, truth["test_images"])
    np.testing.assert_array_equal(splits.test_labels, truth["test_fine"])
    got_images, got_labels = _all_images_and_labels(splits)
    want_images, want_labels = _canonical(truth["train_images"], truth["train_fine"])
    np.testing.assert_array_equal(got_images, want_images)
    np.testing.assert_array_equal(got_labels, want_labels)
    # The validation split is stratified: 20% of every class's 10 training images.
    assert np.bincount(splits.val_labels).tolist() == [2] * len(CIFAR100_FINE)


def test_cifar100_coarse_labels_are_the_superclasses(tmp_path):
    files, truth = _cifar100_files()
    _write_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
    splits = data.load_splits(_config(dataset="cifar100", data_dir=str(tmp_path), label_mode="coarse"))
    assert splits.labels == CIFAR100_COARSE
    assert splits.superclasses is None and splits.superclass_of is None
    np.testing.assert_array_equal(splits.test_labels, np.asarray(CIFAR100_SUPERCLASS_OF)[truth["test_fine"]])


@pytest.mark.parametrize("layout", ["archive", "extracted"])
def test_cifar10_loads_from_data_dir(tmp_path, layout):
    files, truth = _cifar10_files()
    if layout == "archive":
        _write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    else:
        _write_folder(tmp_path / "cifar-10-batches-py", files)
    splits = data.load_splits(_config(dataset="cifar10", data_dir=str(tmp_path), val_split=0.1))
    assert splits.labels == CIFAR10_NAMES
    assert splits.superclasses is None and splits.superclass_of is None
    np.testing.assert_array_equal(splits.test_images, truth["test_images"])
    got_images, got_labels = _all_images_and_labels(splits)
    want_images, want_labels = _canonical(truth["train_images"], truth["train_labels"])
    np.testing.assert_array_equal(got_images, want_images)
    np.testing.assert_array_equal(got_labels, want_labels)


def test_coarse_mode_is_refused_outside_cifar100():
    with pytest.raises(data.DataError, match="cifar100 only"):
        data.load_splits(_config(dataset="smoke", label_mode="coarse"))


def test_corrupt_archive_is_named(tmp_path):
    files, _ = _cifar100_files()
    archive = _write_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # truncated download
    with pytest.raises(data.DataError, match=r"cifar-100-python\.tar\.gz.*corrupt or truncated"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(tmp_path)))
    archive.write_bytes(b"<html>404 Not Found</html>")  # not an archive at all
    with pytest.raises(data.DataError, match=r"cannot read .*cifar-100-python\.tar\.gz"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(archive)))


def test_foreign_archive_is_named(tmp_path):
    other = _write_archive(tmp_path / "photos.tar.gz", "holiday", {"beach.jpg": b"not really"})
    with pytest.raises(
        data.DataError,
        match=r"photos\.tar\.gz is not the CIFAR-100 python-version archive.*"
        r"lacks cifar-100-python/train.*holiday/beach\.jpg",
    ):
        data.load_splits(_config(dataset="cifar100", data_dir=str(other)))
    files, _ = _cifar10_files()
    cifar10 = _write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    with pytest.raises(data.DataError, match=r"looks like the CIFAR-10 python version \(use --dataset cifar10\)"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(cifar10)))


def test_corrupt_or_foreign_pickle_is_named(tmp_path):
    files, _ = _cifar100_files()
    folder = _write_folder(tmp_path / "cifar-100-python", files)
    (folder / "meta").write_bytes(b"garbage, not a pickle")
    with pytest.raises(data.DataError, match=r"cifar-100-python/meta is not a CIFAR python-version pickle"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(tmp_path)))
    (folder / "meta").write_bytes(_pickle({b"label_names": [b"a", b"b"]}))  # CIFAR-10's meta
    with pytest.raises(data.DataError, match=r"meta.*lacks the key 'fine_label_names'"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(tmp_path)))
    # A pickle that would run code is refused, not executed.
    (folder / "meta").write_bytes(pickle.dumps(shutil.rmtree, protocol=2))
    with pytest.raises(data.DataError, match=r"meta is not a CIFAR python-version pickle.*shutil"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(tmp_path)))


def test_missing_data_dir_contents_are_named(tmp_path):
    with pytest.raises(data.DataError, match=r"neither cifar-100-python\.tar\.gz nor its extracted folder"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(tmp_path)))
    with pytest.raises(data.DataError, match="does not exist"):
        data.load_splits(_config(dataset="cifar100", data_dir=str(tmp_path / "nowhere")))


@pytest.fixture
def keras_cache(tmp_path, monkeypatch):
    """A private keras cache folder, and keras' download pointed at no network."""
    keras = pytest.importorskip("keras")
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    home = tmp_path / "keras-home"
    home.mkdir()
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    monkeypatch.setenv("KERAS_HOME", str(home))

    def offline(url, *arguments, **keywords):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    return keras, file_utils, home


def test_offline_without_data_dir_says_what_to_do(keras_cache):
    with pytest.raises(data.DataError) as raised:
        data.load_splits(_config(dataset="cifar100"))
    message = str(raised.value)
    assert "--data-dir" in message and "--preset smoke" in message and "cifar-100-python.tar.gz" in message
    assert "\n" not in message  # one clear line, not a traceback


def test_keras_download_path_reads_names_from_the_keras_cache(keras_cache, monkeypatch):
    _, file_utils, home = keras_cache
    files, truth = _cifar100_files()
    archive = _write_archive(home / "source.tar.gz", "cifar-100-python", files)

    def fake_download(url, target, *arguments, **keywords):  # what a successful download leaves behind
        shutil.copyfile(archive, target)

    monkeypatch.setattr(file_utils, "urlretrieve", fake_download)
    monkeypatch.setattr(file_utils, "validate_file", lambda *arguments, **keywords: True)  # the tiny archive's hash
    splits = data.load_splits(_config(dataset="cifar100"))
    assert splits.labels == CIFAR100_FINE
    assert splits.superclass_of.tolist() == CIFAR100_SUPERCLASS_OF
    np.testing.assert_array_equal(splits.test_images, truth["test_images"])


# ---------------------------------------------------------------------------------------------
# Image folders


def _write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def test_single_tree_folder_is_split_stratified(tmp_path):
    for name, colour in COLOURS.items():
        for index in range(10):
            _write_image(tmp_path / name / f"{index}.png", colour)
    (tmp_path / "red" / "notes.txt").write_text("not an image")
    splits = data.load_splits(_config(dataset=str(tmp_path), test_split=0.2, val_split=0.25))
    assert splits.labels == sorted(COLOURS)
    assert splits.input_shape == (12, 12, 3)
    assert np.bincount(splits.test_labels).tolist() == [2, 2, 2]
    assert np.bincount(splits.val_labels).tolist() == [2, 2, 2]
    assert np.bincount(splits.train_labels).tolist() == [6, 6, 6]
    for images, labels in [(splits.train_images, splits.train_labels), (splits.test_images, splits.test_labels)]:
        want = np.asarray([COLOURS[splits.labels[label]] for label in labels], dtype=np.uint8)
        np.testing.assert_array_equal(images[:, 5, 5], want)


def test_train_test_folder_layout(tmp_path):
    for name, colour in COLOURS.items():
        for index in range(4):
            _write_image(tmp_path / "train" / name / f"{index}.jpg", colour)
        _write_image(tmp_path / "test" / name / "0.jpg", colour)
    splits = data.load_splits(_config(dataset=str(tmp_path), val_split=0.25))
    assert splits.labels == sorted(COLOURS)
    assert np.bincount(splits.test_labels).tolist() == [1, 1, 1]
    assert len(splits.train_labels) + len(splits.val_labels) == 12
    assert np.bincount(splits.val_labels).tolist() == [1, 1, 1]


def test_empty_and_single_class_folders_are_refused(tmp_path):
    with pytest.raises(data.DataError, match="no class sub-folders"):
        data.load_splits(_config(dataset=str(tmp_path)))
    _write_image(tmp_path / "cat" / "0.png", (1, 2, 3))
    with pytest.raises(data.DataError, match=r"single class folder \(cat\)"):
        data.load_splits(_config(dataset=str(tmp_path)))
    (tmp_path / "dog").mkdir()
    with pytest.raises(data.DataError, match=r"hold no images: dog"):
        data.load_splits(_config(dataset=str(tmp_path)))


def test_unreadable_images_are_named(tmp_path):
    for name, colour in COLOURS.items():
        for index in range(3):
            _write_image(tmp_path / name / f"{index}.png", colour)
    for index in range(7):
        (tmp_path / "red" / f"broken_{index}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(data.DataError, match=r"7 of 16 image files .* cannot be read: red/broken_0\.jpg .*and 2 more"):
        data.load_splits(_config(dataset=str(tmp_path)))


def test_mixed_sizes_are_resized_to_the_most_common_with_a_note(tmp_path, capsys):
    for name, colour in COLOURS.items():
        for index in range(4):
            _write_image(tmp_path / name / f"{index}.png", colour)
    _write_image(tmp_path / "green" / "wide.png", COLOURS["green"], size=(40, 20))
    splits = data.load_splits(_config(dataset=str(tmp_path)))
    assert splits.input_shape == (12, 12, 3)
    assert "green/wide.png (40x20)" in capsys.readouterr().err
    everything = np.concatenate([splits.train_images, splits.val_images, splits.test_images])
    labels = np.concatenate([splits.train_labels, splits.val_labels, splits.test_labels])
    green = everything[labels == splits.labels.index("green")]
    assert len(green) == 5 and (green[:, 6, 6] == COLOURS["green"]).all()


def _wide_car(path: Path) -> None:
    """A 48 x 16 picture: red ends (the car's front and back) around a blue middle."""
    picture = Image.new("RGB", (48, 16), COLOURS["blue"])
    picture.paste(COLOURS["red"], (0, 0, 8, 16))
    picture.paste(COLOURS["red"], (40, 0, 48, 16))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)


@pytest.mark.parametrize("fit, ends_kept", [("pad", True), ("crop", False)])
def test_a_wide_photo_keeps_its_ends_when_padded_and_loses_them_when_cropped(tmp_path, fit, ends_kept):
    for name, colour in COLOURS.items():
        for index in range(4):
            _write_image(tmp_path / name / f"{index}.png", colour)
    _wide_car(tmp_path / "green" / "car.png")
    splits = data.load_splits(_config(dataset=str(tmp_path), image_fit=fit, val_split=0.0, test_split=0.2))
    everything = np.concatenate([splits.train_images, splits.test_images])
    green = splits.labels.index("green")
    labels = np.concatenate([splits.train_labels, splits.test_labels])
    car = next(image for image in everything[labels == green] if not (image == COLOURS["green"]).all())
    assert (car[6, 0].astype(int)[0] > 200) == ends_kept  # Red at the left edge only when fitted whole.
    if fit == "pad":
        np.testing.assert_array_equal(car[0, 6], preprocess.NEUTRAL_BACKGROUND)  # Grey above and below.


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(data.DataError, match="unknown dataset 'imagenet'"):
        data.load_splits(_config(dataset="imagenet"))
    with pytest.raises(data.DataError, match="image folder .*/photos does not exist"):
        data.load_splits(_config(dataset=str(tmp_path / "photos")))


# ---------------------------------------------------------------------------------------------
# Stratified splitting and sampling


def test_stratified_split_proportions_per_class():
    labels = np.repeat(np.arange(4), [100, 40, 7, 2])
    kept, held = data.stratified_split(labels, 0.25, seed=3)
    assert np.bincount(labels[held]).tolist() == [25, 10, 2, 1]  # round(count * 0.25), at least one
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(labels)))
    again_kept, again_held = data.stratified_split(labels, 0.25, seed=3)
    np.testing.assert_array_equal(held, again_held)
    _, other_held = data.stratified_split(labels, 0.25, seed=4)
    assert held.tolist() != other_held.tolist()
    # Every class with two or more examples keeps one on each side, even for tiny fractions.
    kept, held = data.stratified_split(np.repeat(np.arange(3), [2, 3, 1]), 0.01, seed=0)
    assert np.bincount(np.repeat(np.arange(3), [2, 3, 1])[held], minlength=3).tolist() == [1, 1, 0]
    kept, held = data.stratified_split(np.repeat(np.arange(2), 2), 0.9, seed=0)
    assert len(kept) == 2 and len(held) == 2
    assert len(data.stratified_split(labels, 0.0, seed=0)[1]) == 0


def test_stratified_sample_covers_classes_in_proportion():
    labels = np.repeat(np.arange(3), [60, 30, 10])
    sample = data.stratified_sample(labels, 20, seed=0)
    assert len(sample) == 20 and len(set(sample.tolist())) == 20
    assert np.bincount(labels[sample]).tolist() == [12, 6, 2]
    np.testing.assert_array_equal(sample, data.stratified_sample(labels, 20, seed=0))
    assert np.bincount(labels[data.stratified_sample(labels, 3, seed=0)]).tolist() == [1, 1, 1]
    assert len(data.stratified_sample(labels, 2, seed=0)) == 2
    assert len(data.stratified_sample(labels, 500, seed=0)) == 100


# ---------------------------------------------------------------------------------------------
# Smoke


def test_smoke_is_deterministic_per_seed():
    images, labels, names = data.make_smoke(20, seed=1)
    assert images.shape == (20 * len(names), 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [20] * len(names)
    assert names == list(data.SMOKE_CLASSES)
    again, again_labels, _ = data.make_smoke(20, seed=1)
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, _, _ = data.make_smoke(20, seed=2)
    assert not np.array_equal(images, other)


def test_smoke_splits():
    config = _config(dataset="smoke", smoke_samples_per_class=50, test_split=0.2, val_split=0.1)
    splits = data.load_splits(config)
    assert splits.labels == list(data.SMOKE_CLASSES) and splits.dataset == "smoke"
    assert splits.input_shape == (32, 32, 3)
    assert np.bincount(splits.test_labels).tolist() == [10] * 10
    assert np.bincount(splits.val_labels).tolist() == [4] * 10
    assert np.bincount(splits.train_labels).tolist() == [36] * 10
    again = data.load_splits(config)
    np.testing.assert_array_equal(splits.test_images, again.test_images)
