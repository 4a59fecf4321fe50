"""Tests of the evaluation: metrics against direct counts, the files a run gets, predict and compare.

    .venv/bin/pytest tests/test_evaluate.py -x -q

The runs here are fakes made in the test: a tiny untrained Keras model with uint8
input (the model contract), its labels, metadata, config and history, and a
`Splits` object. One imitates CIFAR-100 (100 classes in 20 superclasses of five,
scattered as in CIFAR, where a superclass's fine classes are not neighbours);
one is the real smoke dataset, so `evaluate.py --run` can load its data itself.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from edge import occlusion
from edge.common import artifacts, configuration, formatting
from train import compare, evaluate, metrics, plots, predict, report
from train.config import PRESETS, TrainConfig
from train.data import Splits, load_splits

HISTORY_HEADER = "stage,epoch,loss,accuracy,top5,val_loss,val_accuracy,val_top5,learning_rate,seconds\n"
HISTORY_ROWS = [
    "head,0,2.0,0.3,0.6,2.1,0.28,0.55,0.001,1.0",
    "head,1,1.6,0.45,0.7,1.7,0.4,0.68,0.0005,1.0",
    "finetune,2,1.2,0.6,0.85,1.4,0.52,0.8,0.0003,1.5",
    "finetune,3,0.9,0.7,0.9,1.3,0.55,0.82,0.0001,1.5",
]
EXACT = 1e-12  # numbers computed two ways from the same float64 values


def _pixels(path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def _expected_pixels(inches) -> tuple[int, int]:
    return round(inches[0] * plots.DPI), round(inches[1] * plots.DPI)


def _tiny_model(input_shape, num_classes, seed):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, dtype="uint8")
    features = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=seed)
    )(features)
    return keras.Model(inputs, outputs)


def _write_run(run_dir, splits, config: TrainConfig, seed=0, parameters=True):
    """A run directory as train/run.py leaves it before evaluation."""
    run_dir.mkdir(parents=True)
    model = _tiny_model(splits.input_shape, splits.num_classes, seed)
    model.save(run_dir / "model.keras")
    artifacts.write_labels(run_dir / "labels.txt", splits.labels)
    artifacts.write_json(run_dir / "config.json", configuration.to_dict(config))
    metadata = {
        "input_size": list(splits.input_shape[:2]),
        "input_dtype": "uint8",
        "image_size": splits.input_shape[0],
        "model": config.model,
        "dataset": splits.dataset,
        "label_mode": config.label_mode,
        "num_classes": splits.num_classes,
        "superclasses": splits.superclasses,
        "unfreeze": config.unfreeze,
        "superclass_of": None if splits.superclass_of is None else splits.superclass_of.tolist(),
        "epochs": {"head": config.head_epochs, "finetune": config.epochs},
    }
    if parameters:
        metadata.update(parameters=int(model.count_params()), training_seconds=75.0, images_per_second=640.0)
    artifacts.write_json(run_dir / "metadata.json", metadata)
    (run_dir / "history.csv").write_text(HISTORY_HEADER + "\n".join(HISTORY_ROWS) + "\n")
    return model


def _cifar_like_grouping(seed=3):
    """100 fine classes -> 20 superclasses of five, scattered over the indices."""
    superclass_of = np.repeat(np.arange(20), 5)
    np.random.default_rng(seed).shuffle(superclass_of)
    return superclass_of.astype(np.int64)


@pytest.fixture(scope="module")
def cifar_like_run(tmp_path_factory):
    generator = np.random.default_rng(1)
    per_class = 3
    test_labels = np.repeat(np.arange(100), per_class).astype(np.int64)
    images = generator.integers(0, 256, (len(test_labels), 8, 8, 3), dtype=np.uint8)
    splits = Splits(
        train_images=images[:0],
        train_labels=test_labels[:0],
        val_images=images[:0],
        val_labels=test_labels[:0],
        test_images=images,
        test_labels=test_labels,
        labels=[f"class_{index:02d}" for index in range(100)],
        superclasses=[f"group_{index:02d}" for index in range(20)],
        superclass_of=_cifar_like_grouping(),
        dataset="cifar100",
    )
    run_dir = tmp_path_factory.mktemp("runs") / "cifar-like"
    config = TrainConfig(dataset="cifar100", model="cnn", weights="none", head_epochs=2, epochs=2)
    model = _write_run(run_dir, splits, config)
    result = evaluate.evaluate_run(run_dir, model=model, splits=splits)
    return run_dir, model, splits, result


@pytest.fixture(scope="module")
def smoke_like_run(tmp_path_factory):
    """The real smoke data (10 classes), evaluated through the command line as a user would."""
    config = TrainConfig(**dict(PRESETS["smoke"], smoke_samples_per_class=20, model="cnn"))
    splits = load_splits(config)
    run_dir = tmp_path_factory.mktemp("runs") / "smoke-like"
    config = TrainConfig(**dict(configuration.to_dict(config), out=str(run_dir)))
    _write_run(run_dir, splits, config, seed=5, parameters=False)
    assert evaluate.main(["--run", str(run_dir)]) == 0
    return run_dir, splits


def test_metrics_agree_with_direct_counts():
    true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 0])
    generator = np.random.default_rng(7)
    probabilities = generator.dirichlet(np.ones(5) * 0.5, size=len(true))  # class 4 never occurs in `true`
    predicted = probabilities.argmax(axis=1)
    result = metrics.classification_metrics(true, probabilities, ["a", "b", "c", "d", "e"], top_k=2)
    for index, label in enumerate("abcde"):
        hits = sum(1 for t, p in zip(true, predicted) if t == index and p == index)
        predicted_count = sum(1 for p in predicted if p == index)
        support = sum(1 for t in true if t == index)
        precision = hits / predicted_count if predicted_count else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores = result["per_class"][label]
        assert scores["support"] == support
        assert scores["precision"] == pytest.approx(precision, abs=EXACT)
        assert scores["recall"] == pytest.approx(recall, abs=EXACT)
        assert scores["accuracy"] == pytest.approx(recall, abs=EXACT)
        assert scores["f1"] == pytest.approx(f1, abs=EXACT)
    assert result["macro"]["f1"] == pytest.approx(np.mean([result["per_class"][c]["f1"] for c in "abcde"]), abs=EXACT)
    assert result["top1"] == pytest.approx(np.mean(predicted == true), abs=EXACT)
    top2 = np.mean([t in np.argsort(-row)[:2] for t, row in zip(true, probabilities)])
    assert result["top2"] == pytest.approx(top2, abs=EXACT)
    loss = -np.mean([math.log(row[t]) for t, row in zip(true, probabilities)])
    assert result["loss"] == pytest.approx(loss, abs=EXACT)
    ece, bins = 0.0, metrics.CALIBRATION_BINS
    for lower, upper in zip(np.arange(bins) / bins, np.arange(1, bins + 1) / bins):
        members = [i for i, row in enumerate(probabilities) if lower < row.max() <= upper]
        if members:
            accuracy = np.mean([predicted[i] == true[i] for i in members])
            confidence = np.mean([probabilities[i].max() for i in members])
            ece += len(members) / len(true) * abs(accuracy - confidence)
    assert result["calibration"]["expected_calibration_error"] == pytest.approx(ece, abs=EXACT)
    pair = result["confused_pairs"][0]
    counts = {}
    for t, p in zip(true, predicted):
        if t != p:
            counts[(t, p)] = counts.get((t, p), 0) + 1
    assert pair["count"] == max(counts.values())
    assert counts[(pair["true"], pair["predicted"])] == pair["count"]


def test_superclass_scores_follow_the_twenty_groups():
    superclass_of = _cifar_like_grouping()
    groups = [[fine for fine in range(100) if superclass_of[fine] == group] for group in range(20)]
    assert all(len(members) == 5 for members in groups)
    true, predicted = [], []
    for members in groups:  # per group: right, wrong inside the group, wrong in the next group
        true += [members[0], members[1], members[2]]
        predicted += [members[0], members[3], groups[(groups.index(members) + 1) % 20][0]]
    result = metrics.superclass_scores(np.array(true), np.array(predicted), superclass_of)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["errors_within_superclass"] == pytest.approx(1 / 2)
    assert metrics.superclass_scores(np.array([4]), np.array([4]), superclass_of)["errors_within_superclass"] is None


def test_evaluate_run_writes_metrics_plots_and_report(cifar_like_run):
    run_dir, model, splits, result = cifar_like_run
    written = artifacts.read_json(run_dir / "metrics.json")
    for key in (
        "top1",
        "top5",
        "loss",
        "macro",
        "per_class",
        "superclass",
        "calibration",
        "confused_pairs",
        "confusion_matrix",
        "samples",
    ):
        assert key in written, key
    assert written["top1"] == pytest.approx(result["top1"])
    probabilities = model.predict(splits.test_images, verbose=0).astype(np.float64)
    predicted = probabilities.argmax(axis=1)
    true = splits.test_labels
    assert written["top1"] == pytest.approx(np.mean(predicted == true), abs=EXACT)
    for index in (0, 17, 99):
        label = splits.labels[index]
        hits = np.sum((true == index) & (predicted == index))
        assert written["per_class"][label]["recall"] == pytest.approx(hits / np.sum(true == index), abs=EXACT)
        assert written["per_class"][label]["superclass"] == splits.superclasses[splits.superclass_of[index]]
    same = splits.superclass_of[true] == splits.superclass_of[predicted]
    assert written["superclass"]["accuracy"] == pytest.approx(np.mean(same), abs=EXACT)
    assert written["superclass"]["errors_within_superclass"] == pytest.approx(
        np.mean(same[predicted != true]), abs=EXACT
    )
    assert _pixels(run_dir / "plots/curves.png") == _expected_pixels(plots.CURVES_INCHES)
    assert _pixels(run_dir / "plots/confusion.png") == _expected_pixels(plots.CONFUSION_SUPERCLASS_INCHES)
    assert _pixels(run_dir / "plots/samples.png") == _expected_pixels(plots.SAMPLES_INCHES)
    pair_rows = min(len(written["confused_pairs"]), 8)
    assert _pixels(run_dir / "plots/confused_pairs.png") == _expected_pixels(plots.confused_pairs_inches(pair_rows))
    report_text = (run_dir / "report.md").read_text()
    for link in report.PLOTS.values():
        assert f"]({link})" in report_text
    assert str(run_dir) not in report_text  # relative links only
    assert "## Worst 10 classes" in report_text and "## Best 10 classes" in report_text
    assert "superclass accuracy" in report_text
    section = report_text.split(report.START)[1].split(report.END)[0]
    assert "Not measured yet" in section and report_text.index(section) < report_text.index("## Worst")
    assert not list(run_dir.rglob("*.partial*"))  # atomic writes leave no temporary files


def test_evaluate_command_line_on_smoke_data(smoke_like_run):
    run_dir, splits = smoke_like_run
    written = artifacts.read_json(run_dir / "metrics.json")
    assert written["superclass"] is None and written["num_classes"] == 10
    assert written["samples"] == len(splits.test_labels)
    assert sum(scores["support"] for scores in written["per_class"].values()) == len(splits.test_labels)
    assert _pixels(run_dir / "plots/confusion.png") == _expected_pixels(plots.CONFUSION_COUNTS_INCHES)
    report_text = (run_dir / "report.md").read_text()
    table = report_text.split("## Classes, worst first")[1].split("##")[0]
    assert all(f"| {label} |" in table for label in splits.labels)  # ten classes: one table holds them all


def test_report_includes_the_quantization_table_between_markers(cifar_like_run, monkeypatch):
    run_dir, *_ = cifar_like_run
    monkeypatch.setattr(
        report,
        "render_quantization",
        lambda quantization: f"| variant | top-1 |\n|---|---|\n| int8 | {quantization['variants']['int8']['top1']} |",
    )
    artifacts.write_json(
        run_dir / "quantization.json",
        {"reference": {"top1": 0.5}, "variants": {"int8": {"top1": 0.25}}, "max_drop": 1.0, "passed": False},
    )
    try:
        assert evaluate.main(["--run", str(run_dir), "--report-only"]) == 0
        report_text = (run_dir / "report.md").read_text()
        section = report_text.split(report.START)[1].split(report.END)[0]
        assert "| int8 | 0.25 |" in section
    finally:
        (run_dir / "quantization.json").unlink()
        report.write_report(run_dir)


def test_predict_classifies_good_files_and_names_broken_ones(smoke_like_run, tmp_path, capsys):
    run_dir, splits = smoke_like_run
    good_png, good_jpeg = tmp_path / "good.png", tmp_path / "photo.jpg"
    Image.fromarray(splits.test_images[0]).resize((64, 48)).save(good_png)
    Image.fromarray(splits.test_images[1]).save(good_jpeg)
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("not an image")
    missing = tmp_path / "missing.png"
    status = predict.main(
        [
            str(good_png),
            str(not_an_image),
            str(missing),
            str(good_jpeg),
            "--run",
            str(run_dir),
            "--top-k",
            "3",
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert status == 1
    result = json.loads(captured.out)
    assert [entry["file"] for entry in result["results"]] == [str(good_png), str(good_jpeg)]
    for entry in result["results"]:
        probabilities = [prediction["probability"] for prediction in entry["predictions"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(prediction["label"] in splits.labels for prediction in entry["predictions"])
    assert [failure["file"] for failure in result["errors"]] == [str(not_an_image), str(missing)]
    assert str(not_an_image) in captured.err and str(missing) in captured.err
    assert predict.main([str(good_png), "--run", str(run_dir)]) == 0
    assert str(good_png) in capsys.readouterr().out


def test_predict_explain_writes_one_overlay_per_file(smoke_like_run, tmp_path, capsys):
    run_dir, splits = smoke_like_run
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, same_stem = tmp_path / "a" / "photo.png", tmp_path / "b" / "photo.jpg"
    Image.fromarray(splits.test_images[0]).resize((64, 48)).save(first)
    Image.fromarray(splits.test_images[1]).save(same_stem)
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    where = tmp_path / "where"
    status = predict.main(
        [str(first), str(broken), str(same_stem), "--run", str(run_dir), "--json", "--explain", str(where)]
    )
    assert status == 1  # the broken file is named, the others are explained
    result = json.loads(capsys.readouterr().out)
    written = [entry["explanation"]["file"] for entry in result["results"]]
    assert written == [str(where / "photo.png"), str(where / "photo-2.png")]  # the same stem twice: no overwrite
    assert sorted(path.name for path in where.iterdir()) == ["photo-2.png", "photo.png"]  # no temporary left
    for entry in result["results"]:
        explanation = entry["explanation"]
        assert explanation["label"] == entry["predictions"][0]["label"]
        assert explanation["probability"] == pytest.approx(entry["predictions"][0]["probability"], abs=1e-5)
        assert explanation["max_drop"] >= 0 and explanation["grid"] == [occlusion.GRID, occlusion.GRID]
        assert _pixels(explanation["file"]) == (occlusion.DISPLAY_SIZE, occlusion.DISPLAY_SIZE)
    first_bytes = (where / "photo.png").read_bytes()
    assert predict.main([str(first), "--run", str(run_dir), "--explain", str(where)]) == 0
    assert f"where it looked: {where / 'photo.png'}" in capsys.readouterr().out
    assert (where / "photo.png").read_bytes() == first_bytes  # deterministic


def test_predict_defaults_to_the_newest_run(tmp_path, monkeypatch):
    for name in ("older", "newer"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "model.keras").write_bytes(b"")
    older = tmp_path / "runs" / "older" / "model.keras"
    import os

    os.utime(older, (1, 1))
    monkeypatch.chdir(tmp_path)
    assert predict.newest_run().name == "newer"
    with pytest.raises(artifacts.ArtifactError, match="--run"):
        predict.newest_run(tmp_path / "elsewhere")


def test_compare_reads_two_runs(cifar_like_run, smoke_like_run, tmp_path):
    first, second = cifar_like_run[0], smoke_like_run[0]
    out = tmp_path / "comparison.md"
    result = compare.run(compare.CompareConfig(runs=[str(first), str(second)], out=str(out)))
    lines = out.read_text().splitlines()
    assert out.read_text() == result["markdown"] and len(lines) == 4
    assert all(line.count("|") == len(compare.COLUMNS) + 1 for line in lines)
    first_row, second_row = result["rows"]
    assert first_row["top1"] == artifacts.read_json(first / "metrics.json")["top1"]
    assert first_row["parameters"] > 0 and second_row["parameters"] is None
    assert "n/a" in lines[3] and formatting.percent(first_row["top1"], 2) in lines[2]
    with pytest.raises(artifacts.ArtifactError, match="no such run directory"):
        compare.run(compare.CompareConfig(runs=[str(tmp_path / "nothing")]))


def test_compare_skips_folders_that_hold_no_run(cifar_like_run, tmp_path, capsys):
    """`train/compare.py runs/*` meets empty folders (of runs that were refused before) and stray files."""
    empty, stray = tmp_path / "runs" / "cifar100-efficientnet_b0-empty", tmp_path / "runs" / "notes.md"
    empty.mkdir(parents=True)
    stray.write_text("notes\n")
    result = compare.run(compare.CompareConfig(runs=[str(cifar_like_run[0]), str(empty), str(stray)]))
    assert [row["run"] for row in result["rows"]] == [cifar_like_run[0].name]
    err = capsys.readouterr().err
    assert f"note: skipped {empty}: holds no run" in err and f"note: skipped {stray}: not a folder" in err
    with pytest.raises(artifacts.ArtifactError, match="none of the given folders holds a run"):
        compare.run(compare.CompareConfig(runs=[str(empty)]))


@pytest.mark.slow
def test_the_smoke_run_report_is_complete(request):
    """On the lead's end-to-end smoke run (tests/conftest.py), when that fixture exists."""
    try:
        run_dir = request.getfixturevalue("smoke_run")
    except pytest.FixtureLookupError:
        pytest.skip("no smoke_run fixture in tests/conftest.py yet")
    written = artifacts.read_json(run_dir / "metrics.json")
    assert {"top1", "top5", "loss", "macro", "per_class", "calibration"} <= set(written)
    for link in report.PLOTS.values():
        assert (run_dir / link).exists()
        _pixels(run_dir / link)
    report_text = (run_dir / "report.md").read_text()
    assert all(f"]({link})" in report_text for link in report.PLOTS.values())
    if (run_dir / "quantization.json").exists():  # the export filled in the float-vs-int8 table
        section = report_text.split(report.START)[1].split(report.END)[0]
        assert "int8" in section and "Not measured yet" not in section
