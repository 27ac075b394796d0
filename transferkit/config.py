"""Training options, as one dataclass serialized to `config.json` in the run directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from transferkit.accelerator import check_mixed_precision, detect
from transferkit.backbones import get_backbone, validate_size
from transferkit.budget.parse import resolve_budget
from transferkit.errors import ConfigError, DataError
from transferkit.packages import package_versions

# `--distribute` values (`transferkit.distribute`), validated here with the other options.
DISTRIBUTE_CHOICES = ("auto", "none", "mirrored", "multi-worker")


@dataclasses.dataclass
class TrainConfig:
    """Every option of `transferkit.train`, with its default.

    Attributes:
        data: Data folder, or `tfds:NAME` for a TensorFlow Datasets dataset; a folder
            is made absolute when resolved (`absolute_data`), so config.json names it
            whatever the working directory of a later command.
        backbone: Registry name (see `transferkit backbones`).
        weights: `"imagenet"`, `"none"` or a path to a backbone weights file.
        image_size: Square input side; None lets the plan choose it from the data.
        val_split: Fraction of each class held out for validation (early stopping).
        test_split: Fraction of each class held out for the final evaluation.
        seed: Seed for the split, initialization, augmentation and shuffling.
        strategy: `"auto"` (the plan decides), `"feature-extract"` or `"fine-tune"`.
        unfreeze: Number of top backbone blocks to fine-tune; None lets the plan decide.
        batch_size: Images per training step (per GPU); None: the device's default
            (`transferkit.accelerator`: 32 on a CPU, 128 on a GPU), resolved and
            recorded in config.json.
        head_epochs: Maximum epochs of phase 1 (the head on cached features).
        fine_tune_epochs: Maximum epochs of phase 2 (fine-tuning).
        head_learning_rate: Adam learning rate of phase 1.
        fine_tune_learning_rate: Adam learning rate of phase 2 (lower: small steps keep
            the pretrained features).
        augment_copies: Augmented copies of each training image whose features are
            cached for phase 1 (0: none).
        dropout: Dropout rate before the classification layer.
        label_smoothing: Label smoothing of the cross-entropy loss.
        patience: Early-stopping patience (epochs without a better validation loss).
        min_per_class: Fewest usable images a class may have.
        workers: Threads decoding images.
        exclude_flagged: Leave the images the data doctor flags (label issues,
            outliers) out of the split.
        quiet: No progress bars.
        calibrate: Fit the trust outputs after training (temperature, "not sure"
            threshold, unknown score; `transferkit.trust`); `--no-calibrate` skips it.
        ensemble: Members of an ensemble (1: one classifier; `transferkit.ensemble`).
        backbones: The members' backbones (an ensemble of backbones); None: every
            member has `backbone`, with seeds `seed`, `seed + 1`, ...
        split_seed: Seed of the train/val/test split; None: `seed`. Members of an
            ensemble differ in `seed` and share the split.
        splits_file: A `splits.csv` to reuse instead of splitting (an ensemble's and
            `compare`'s runs all use their first run's split).
        distribute: The `tf.distribute` strategy: `"auto"`, `"none"`, `"mirrored"` or
            `"multi-worker"` (see `transferkit.distribute`; not `strategy`).
        mixed_precision: `"auto"` (`mixed_float16` on a GPU of compute capability 7.0
            or more), `"on"` or `"off"`; resolved to on/off in config.json.
        time_limit: Seconds the whole command may take (audit to finished run
            directory); the plan measures this machine and fits the default recipe
            into it (`transferkit.budget`); time left buys ensemble members
            (`extra_members`). A string such as `"20m"` is parsed. None:
            the default recipe, unmeasured.
        preset: `"fast"` (today's recipe), `"balanced"` (20 minutes) or `"best"` (1 hour);
            an explicit `time_limit` wins over the preset's budget.
        teacher: A finished run (one classifier or an ensemble) to distill this run
            from (`transferkit.distill`): the phases train on a mix of the one-hot
            labels and the teacher's temperature-softened probabilities; the run
            reuses the teacher's split and, when the backbone accepts it, its size.
        distill: With `ensemble`/`backbones`: after the ensemble, train one student of
            member 1's backbone on its soft labels into `RUN/student/`.
        distill_alpha: Weight of the teacher's soft labels in a student's targets
            (1 - alpha on the one-hot labels).
        distill_temperature: Temperature softening the teacher's probabilities.
        extra_members: A time budget spends the time left after the default run on
            ensemble members, kept when validation says so (`transferkit.budget.members`);
            False: it stops after the default run.
        packages: Python's and the packages' versions when training started
            (`transferkit.packages.package_versions`; filled by `resolved`).
    """

    data: str = ""
    backbone: str = "mobilenet_v2_0.35"
    weights: str = "imagenet"
    image_size: int | None = None
    val_split: float = 0.15
    test_split: float = 0.15
    seed: int = 42
    strategy: str = "auto"
    unfreeze: int | None = None
    batch_size: int | None = None
    head_epochs: int = 60
    fine_tune_epochs: int = 10
    head_learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 3e-4
    augment_copies: int = 2
    dropout: float = 0.2
    label_smoothing: float = 0.1
    patience: int = 5
    min_per_class: int = 5
    workers: int = 2
    exclude_flagged: bool = False
    quiet: bool = False
    calibrate: bool = True
    time_limit: float | None = None
    ensemble: int = 1
    backbones: list[str] | None = None
    split_seed: int | None = None
    splits_file: str | None = None
    distribute: str = "auto"
    mixed_precision: str = "auto"
    preset: str | None = None
    teacher: str | None = None
    distill: bool = False
    distill_alpha: float = 0.5
    distill_temperature: float = 2.0
    extra_members: bool = True
    packages: dict[str, str] = dataclasses.field(default_factory=dict)

    def resolved(self) -> "TrainConfig":
        """Returns a validated copy with defaults (image size) filled in.

        Raises:
            ConfigError: An option is out of range; the message names it.
            DataError: The data folder is missing or is a file.
        """
        backbone = get_backbone(self.backbone)
        config = dataclasses.replace(self)
        check_mixed_precision(config.mixed_precision)
        if config.batch_size is None or config.mixed_precision == "auto":
            device = detect()  # asked only when needed: it initializes TensorFlow's GPUs
            mixed = device.mixed_precision(config.mixed_precision)
            config = dataclasses.replace(
                config, mixed_precision="on" if mixed else "off",
                batch_size=device.default_batch if config.batch_size is None
                else config.batch_size)
        config.time_limit = resolve_budget(config.time_limit, config.preset)
        config.packages = config.packages or package_versions()  # recorded once, at start
        # None: chosen from the data after the audit (`plan.choose_image_size`).
        if config.image_size is not None:
            validate_size(backbone, config.image_size)
        _check_data(config.data)
        config.data = absolute_data(config.data)
        for name in ("seed", "split_seed"):
            value = getattr(config, name)
            if value is not None and not 0 <= value < 2 ** 32:
                raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and "
                                  f"2**32 - 1, got {value}")
        if config.time_limit is not None and not config.time_limit > 0:
            raise ConfigError(f"--time-limit must be positive, got {config.time_limit}")
        if config.ensemble < 1:
            raise ConfigError(f"--ensemble must be at least 1 (1: one classifier, 2 or more: "
                              f"an ensemble), got "
                              f"{config.ensemble}")
        if config.ensemble > 1 and config.distribute == "multi-worker":
            raise ConfigError("--ensemble trains on one machine for now; train each member "
                              "with --distribute multi-worker, or drop one of the two")
        if config.backbones is not None:
            config.backbones = list(config.backbones)
            for name in config.backbones:
                get_backbone(name)
            if config.ensemble == 1:
                config.ensemble = len(config.backbones)
            if len(config.backbones) != config.ensemble or config.ensemble < 2:
                raise ConfigError(f"--backbones names {len(config.backbones)} backbones "
                                  f"but --ensemble is {config.ensemble}; give one backbone "
                                  "per member (two or more), or leave --ensemble out")
        if config.distill and config.ensemble < 2:
            raise ConfigError("--distill distills an ensemble: add --ensemble K or "
                              "--backbones a,b (or distill any run with --teacher RUN)")
        if config.teacher is not None and config.ensemble > 1:
            raise ConfigError("--teacher trains one student: drop --ensemble/--backbones "
                              "(or use --distill to distill the ensemble you train)")
        if not 0 <= config.distill_alpha <= 1 or not config.distill_temperature > 0:
            raise ConfigError("--distill-alpha must be in [0, 1] and --distill-temperature "
                              f"positive, got {config.distill_alpha} and "
                              f"{config.distill_temperature}")
        for name in ("val_split", "test_split"):
            value = getattr(config, name)
            if not 0 < value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1 "
                                  f"(exclusive), got {value}")
        if config.val_split + config.test_split >= 0.9:
            raise ConfigError("--val-split plus --test-split must leave at least 10% of the "
                              "images for training")
        if config.strategy not in ("auto", "feature-extract", "fine-tune"):
            raise ConfigError("--strategy must be auto, feature-extract or fine-tune, got "
                              f"{config.strategy!r}")
        if config.distribute not in DISTRIBUTE_CHOICES:
            raise ConfigError("--distribute must be auto, none, mirrored or multi-worker, "
                              f"got {config.distribute!r}")
        if config.unfreeze is not None and config.unfreeze < 0:
            raise ConfigError(f"--unfreeze must be 0 or more, got {config.unfreeze}")
        for name in ("batch_size", "head_epochs", "min_per_class", "workers"):
            if getattr(config, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if config.augment_copies < 0 or config.fine_tune_epochs < 0:
            raise ConfigError("--augment-copies and --fine-tune-epochs must be 0 or more")
        if config.patience < 0:
            raise ConfigError(f"patience must be 0 or more, got {config.patience}")
        for name in ("dropout", "label_smoothing"):
            if not 0 <= getattr(config, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(config, name)}")
        for name in ("head_learning_rate", "fine_tune_learning_rate"):
            if not getattr(config, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(config, name)}")
        return config

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready values (config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_options(cls, data: str | Path, options: dict[str, Any]) -> "TrainConfig":
        """The resolved config of `train(data, out, **options)`.

        Raises:
            ConfigError: An option that is not a field (the message lists the fields),
                or a value out of range.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"data"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown training option {unknown[0]!r}; the options are: "
                              f"{', '.join(sorted(known))}")
        return cls(data=str(data), **options).resolved()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Builds a config from a dict, ignoring keys this version does not know."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def absolute_data(data: str) -> str:
    """The `data` option as the run stores it: a folder's absolute path, `tfds:NAME` as is.

    A relative path would mean another folder to every command started elsewhere
    (`predict --samples`, `report`, `export`, a resume), so it is resolved against the
    working directory of the command that names it. Links are kept as named
    (`os.path.abspath`, not `resolve`): they may be re-pointed on purpose.
    """
    if not data or data.startswith("tfds:"):
        return data
    return os.path.abspath(data)


def _check_data(data: str) -> None:
    """Fails early on a missing data folder, before a run directory is created for it.

    (Otherwise the half-made run directory would remember the wrong path, and the
    corrected command would be refused as "an unfinished run with other options".)
    """
    if not data or data.startswith("tfds:"):
        return
    path = Path(data)
    if not path.exists():
        raise DataError(f"data folder not found: {path}")
    if not path.is_dir():
        raise DataError(f"{path} is a file, not a folder; pass the folder that holds one "
                        "subfolder per class")
