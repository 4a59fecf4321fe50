"""The default recipe is the published transfer protocol; the quick preset is short; BatchNorm follows --batchnorm.

docs/training.md cites each value; these tests keep the code and that document in step.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.common import command
from train import config as train_config
from train import run as train_run
from train.config import PRESETS, PRETRAINED_RECIPE, TrainConfig

#: CIFAR's training images, and what is left after the default 10% validation split.
CIFAR_TRAIN_IMAGES, CIFAR_TRAIN_AFTER_VALIDATION = 50_000, 45_000
#: The protocol's length: 20,000 steps at batch 256 (SimCLR appendix B.8.1, after Kornblith et al. 2019).
PROTOCOL_STEPS, PROTOCOL_BATCH = 20_000, 256


def test_the_default_recipe_is_the_transfer_protocol():
    resolved = TrainConfig().with_recipe(CIFAR_TRAIN_AFTER_VALIDATION)
    assert resolved.model == "efficientnet_b0" and resolved.weights == "imagenet"
    assert resolved.resolved_image_size == 224 and resolved.unfreeze == "all"
    assert (resolved.head_epochs, resolved.epochs, resolved.batch_size) == (0, 100, PROTOCOL_BATCH)
    assert (resolved.optimizer, resolved.learning_rate, resolved.weight_decay) == ("sgd", 0.01, 1e-4)
    assert (resolved.warmup_epochs, resolved.label_smoothing, resolved.batchnorm) == (0.0, 0.0, "train")
    assert (resolved.augment, resolved.mix, resolved.schedule) == ("basic", "none", "cosine")
    # 100 epochs of all 50,000 images (the final run) is within 3% of the protocol's 20,000 steps.
    final_steps = resolved.epochs * (CIFAR_TRAIN_IMAGES // resolved.batch_size)
    assert abs(final_steps - PROTOCOL_STEPS) / PROTOCOL_STEPS < 0.03
    # Keras' decoupled decay is scaled by the rate: 1e-4 at 0.01 is the protocol grid's value 1e-6.
    assert resolved.weight_decay * resolved.learning_rate == pytest.approx(1e-6)


def test_options_given_win_over_the_recipe_and_unset_ones_resolve():
    chosen = TrainConfig(
        optimizer="adamw", learning_rate=1e-3, weight_decay=0.0, batchnorm="frozen", label_smoothing=0.1, epochs=30
    ).with_recipe(CIFAR_TRAIN_AFTER_VALIDATION)
    assert (chosen.optimizer, chosen.learning_rate, chosen.weight_decay) == ("adamw", 1e-3, 0.0)
    assert (chosen.batchnorm, chosen.label_smoothing, chosen.epochs) == ("frozen", 0.1, 30)
    assert chosen.batch_size == PRETRAINED_RECIPE.batch_size
    for scratch in (TrainConfig(model="cnn"), TrainConfig(model="se_cnn"), TrainConfig(weights="none")):
        resolved = scratch.with_recipe(CIFAR_TRAIN_AFTER_VALIDATION)
        assert (resolved.optimizer, resolved.epochs, resolved.warmup_epochs) == ("adamw", 14, 1.0)
        assert None not in (resolved.weight_decay, resolved.label_smoothing, resolved.batchnorm)
    with pytest.raises(train_config.configuration.ConfigError, match="not both 0"):
        TrainConfig(epochs=0).with_recipe(CIFAR_TRAIN_AFTER_VALIDATION)


def test_batchnorm_momentum_follows_the_protocols_rule():
    config = TrainConfig()
    assert config.batchnorm_momentum(CIFAR_TRAIN_IMAGES // PROTOCOL_BATCH) == pytest.approx(1 - 10 / 195)
    assert config.batchnorm_momentum(50) == 0.9  # Short epochs: never below 0.9.
    assert config.batchnorm_momentum(0) == 0.9


def test_the_quick_preset_is_short_and_is_the_earlier_default():
    quick = command.parse_config(train_run.COMMAND, ["--preset", "quick"]).with_recipe(CIFAR_TRAIN_AFTER_VALIDATION)
    assert quick.head_epochs + quick.epochs <= train_config.QUICK_MAX_EPOCHS == 15
    assert (quick.head_epochs, quick.epochs, quick.batch_size) == (1, 14, 128)
    assert (quick.optimizer, quick.learning_rate, quick.weight_decay) == ("adamw", 3e-4, 0.05)
    assert (quick.batchnorm, quick.label_smoothing, quick.warmup_epochs) == ("frozen", 0.1, 1.0)
    assert quick.model == "efficientnet_b0" and quick.dataset == "cifar100"


def test_the_seed_presets_keep_the_defaults_they_were_written_against():
    for name, preset in PRESETS.items():
        resolved = TrainConfig(**preset).with_recipe(CIFAR_TRAIN_AFTER_VALIDATION)
        if name.startswith("seed-") and resolved.pretrained:
            assert resolved.batchnorm == "frozen", name
            for key, value in train_config.SEED_PRETRAINED_DEFAULTS.items():
                assert getattr(resolved, key) == preset.get(key, value), (name, key)


def test_a_run_written_before_the_batchnorm_option_resumes_frozen(tmp_path):
    values = train_config.configuration.to_dict(TrainConfig(head_epochs=1, epochs=14, batch_size=128))
    del values["batchnorm"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert TrainConfig.from_run(tmp_path).batchnorm == "frozen"


def _tiny_backbone(keras):
    """A two-BatchNorm functional network standing in for a pretrained backbone (no download)."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn0")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    return keras.Model(inputs, x, name="backbone")


def _moving_mean_after_one_step(keras, train_batchnorm: bool):
    from train import models

    backbone = _tiny_backbone(keras)
    models.freeze_batchnorm(backbone)  # As build_model leaves a pretrained backbone.
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(backbone(inputs)))
    model = keras.Model(inputs, outputs)
    models.set_backbone_trainable(
        backbone,
        1.0,
        pretrained=True,
        train_batchnorm=train_batchnorm,
        batchnorm_momentum=0.5 if train_batchnorm else None,
    )
    batchnorm = backbone.get_layer("bn0")
    before = np.array(batchnorm.moving_mean)
    model.compile(optimizer="sgd", loss="mse")
    images = np.random.default_rng(0).normal(5.0, 1.0, (8, 8, 8, 3)).astype("float32")
    model.fit(images, np.zeros((8, 2), "float32"), batch_size=8, epochs=1, verbose=0)
    return batchnorm, before, np.array(batchnorm.moving_mean)


def test_batchnorm_frozen_keeps_the_statistics_and_train_updates_them():
    import keras

    frozen, before, after = _moving_mean_after_one_step(keras, train_batchnorm=False)
    assert not frozen.trainable and np.array_equal(before, after)
    trained, before, after = _moving_mean_after_one_step(keras, train_batchnorm=True)
    assert trained.trainable and trained.momentum == 0.5
    assert not np.allclose(before, after)


def test_partial_unfreezing_trains_only_the_batchnorm_above_the_cut():
    import keras

    from train import models

    backbone = _tiny_backbone(keras)
    models.set_backbone_trainable(backbone, 0.4, pretrained=True, train_batchnorm=True, batchnorm_momentum=0.9)
    assert backbone.get_layer("bn1").trainable and backbone.get_layer("bn1").momentum == 0.9
    assert not backbone.get_layer("bn0").trainable and backbone.get_layer("bn0").momentum == 0.99


def test_resolving_without_a_dataset_size_takes_the_recipe_batch_unshrunk():
    resolved = TrainConfig(model="se_cnn", weights="none").with_recipe()
    assert resolved.batch_size == 64 and resolved.optimizer == "adamw" and resolved.warmup_epochs == 1.0
    assert resolved.with_recipe(CIFAR_TRAIN_AFTER_VALIDATION).with_recipe() == resolved.with_recipe(
        CIFAR_TRAIN_AFTER_VALIDATION
    )
