"""Typed run configuration: dataclasses loaded from YAML, overridable with `key=value`.

Unknown keys are refused (with the key's dotted path), values are checked against the field types,
and the resolved config is saved in every run folder so that inference reads exactly what training
used. Variants are YAML files in `spinegrade/configs/` (`tiny`, `demo`, `full`), never copied code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from spinegrade.errors import ConfigError
from spinegrade.io import write_text

CONFIG_DIR = Path(__file__).parent / "configs"

T = TypeVar("T")


@dataclass
class OptimConfig:
    """Optimisation settings of one stage."""

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    grad_clip: float = 5.0
    ema_decay: float = 0.0  #: 0 disables the exponential moving average of weights
    amp: bool = True  #: mixed precision; only takes effect on CUDA
    #: keep the epoch (its EMA weights when ema_decay > 0) of the lowest loss on an inner split of
    #: the training studies, one of `inner_folds` folds by study; the held-out fold selects nothing
    early_stopping: bool = False
    inner_folds: int = 5  #: with early_stopping: 1 of this many folds of the training studies
    patience: int = 0  #: with early_stopping: stop after this many epochs without a better one
    tensorboard: bool = False  #: losses, learning rate and epoch metrics to `<stage folder>/tb/`


@dataclass
class DataConfig:
    """Where studies come from and how they are split."""

    folds: int = 5
    seed: int = 42
    num_workers: int = 2  #: worker processes for reading, caching and loading
    max_studies: int | None = None  #: use only the first N studies (quick trials)
    cache_dir: str | None = None  #: preprocessed study cache; default `<run_dir>/cache`


@dataclass
class LocalizeConfig:
    """Stage 1: keypoint localisation (see `spinegrade.localize`)."""

    backbone: str = "resnet18"
    pretrained: bool | str = False  #: see `GradeConfig.pretrained`
    image_size: int = 256  #: sagittal/axial slices are resampled to this square size (pixels)
    heatmap_stride: int = 4
    sigma_px: float = 2.0  #: Gaussian target sigma on the heatmap grid
    slice_sigma: float = (
        0.6  #: fall-off of target peaks with distance from the labelled slice (slices)
    )
    pos_weight: float = 10.0  #: extra BCE weight on target pixels (1 + pos_weight * target)
    decoder_width: int = 64  #: channels of the FPN decoder
    max_axial_distance_mm: float = (
        10.0  #: a level farther than this from every axial slice is not located
    )
    optim: OptimConfig = field(default_factory=OptimConfig)


#: Which view(s) a condition group is graded from: its sagittal crop, its axial crop, or both fused.
ViewChoice = Literal["sagittal", "axial", "both"]
SliceDecode = Literal["peak", "ordered", "series"]


@dataclass(frozen=True)
class ViewsConfig:
    """The view(s) each condition group is graded from (see `spinegrade.grade.views`).

    The default is one crop per target, on the series its point is marked on. A view other than
    the point's is cut where the point's world position falls in that view's stack.
    """

    spinal: ViewChoice = "sagittal"  #: Sagittal T2/STIR; axial: Axial T2
    foraminal: ViewChoice = "sagittal"  #: Sagittal T1; axial: Axial T2
    subarticular: ViewChoice = "axial"  #: Axial T2; sagittal: Sagittal T2/STIR


@dataclass
class GradeConfig:
    """Stage 2: severity grading on 2.5D crops (see `spinegrade.grade`)."""

    backbone: str = "resnet18"
    #: false; true (timm's default weights of `backbone`, from the hub); a timm name with a tag,
    #: e.g. resnet18.a1_in1k, or hf-hub:ORG/REPO (hub); or a local .pth/.pt/.bin/.safetensors file
    pretrained: bool | str = False
    crop_mm: float = 40.0  #: side of the square crop in millimetres
    crop_px: int = 64  #: side of the crop after resampling
    slices: int = 5  #: neighbouring slices stacked as channels
    slice_shift: int = 2  #: training jitter of the centre slice (+- slices)
    coord_jitter_mm: float = 2.0  #: training jitter of the crop centre (std in mm, per axis)
    angle_deg: float = 10.0  #: training rotation of the crop grid (+- degrees)
    scale_jitter: float = 0.1  #: training zoom of the crop grid (1 +- this)
    mirror_p: float = (
        0.5  #: probability of the patient left/right mirror (swaps left/right targets)
    )
    intensity_p: float = 0.5  #: probability of each intensity augmentation (albumentations)
    dim: int = 128  #: token width after the backbone
    context_layers: int = 1  #: transformer layers over a study's 25 target tokens (0 = none)
    dropout: float = 0.1
    any_severe_weight: float = 1.0  #: weight of the any-severe-spinal loss term
    #: weight of the mirror-consistency term (0: off, no extra cost): each training study is also
    #: seen left/right-mirrored and the symmetric KL divergence between its predictions and the
    #: twin's, swapped back, is added to the loss (`grade.loss.mirror_consistency`); doubles the
    #: grader's training compute. Not for Sagittal T1 slices (one side per slice: no mirror)
    consistency_weight: float = 0.0
    #: over-draw studies: weight 1 + factor * sum over its targets of (metric weight - 1), i.e.
    #: +factor per moderate and +3 factor per severe target (0: every study drawn alike)
    resample_factor: float = 0.0
    views: ViewsConfig = field(default_factory=ViewsConfig)
    #: a view other than the point's is cropped on that view's slice nearest the point when the
    #: point lies within this distance of its plane (mm); farther, that crop is missing
    view_distance_mm: float = 10.0
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class SlicesConfig:
    """`spinegrade slices`: the two stages on 2D PNG images (see `spinegrade.slices`)."""

    #: Sagittal T1 PNGs lost their pixel spacing: the original image's longer side is taken to span
    #: this many mm (real lumbar sagittal T1 fields of view are ~240-350 mm)
    fov_mm: float = 300.0
    #: Axial T2 crops lost theirs too: each crop's longer side (its width) is taken to span this
    crop_width_mm: float = 40.0
    #: graders trained per fold, each from its own seed, their uncalibrated probabilities averaged
    #: (the first is the one a single-grader run trains; more cost that much more grader time)
    graders: int = 1
    #: slices: of a fold's graders, the last this many are trained around the points its own
    #: localiser finds on its training slices (decoded as for prediction) instead of the true
    #: points, so that they learn the localiser's errors (`slices.train`)
    found_point_graders: int = 0
    #: crops: the subarticular recesses are graded on crops centred this fraction of the crop's
    #: width left and right of its centre (the canal on one at the centre)
    side_offset: float = 0.2
    tta: bool = False  #: crops: average each prediction with its left/right mirror's
    #: slices: decode each channel at its own peak (`peak`), keep the five levels in order down
    #: the slice (`ordered`: `localize.decode.decode_ordered`), or find the levels, in order, on
    #: the mean map of all the series' asked slices, then each slice's point on its own map near
    #: there (`series`: `localize.decode.decode_grouped`)
    decode: SliceDecode = "peak"
    #: slices, `ordered` and `series`: the least drop (mm) from one level's foramen to the next
    #: level's. Real neighbouring levels are ~25-35 mm apart; this only rules out two levels on one
    #: foramen
    level_gap_mm: float = 8.0
    #: slices, `series`: how far (mm, in x and in y) a slice's point may lie from its series'
    #: point for the level. A level's left and right foramina lie within ~8 mm in 95% of the
    #: rsna_sagt1 series' levels, the next level ~30 mm away; 14 was best of 10-24 on one fold
    series_radius_mm: float = 14.0
    #: slices: the soft-argmax around a peak weighs each heatmap cell's height above this fraction
    #: of the peak's (0: its whole height; `localize.decode.decode_heatmaps`)
    centroid_floor: float = 0.0
    #: slices: grade each foraminal target also at points this many mm right, left, below and
    #: above its point, and average the five (0: at its point alone; `slices.grade.grade_at`)
    grade_around_mm: float = 0.0
    #: slices: also run the localiser on its input zoomed in and out about the centre by this
    #: fraction (0.1: x1.1 and x0.9) and average the three heatmaps in the slice's own frame (0:
    #: once, as trained; `slices.localize.zoomed_maps`)
    localize_zoom: float = 0.0


@dataclass
class Config:
    """A whole run: data, both stages, and where it runs."""

    name: str = "default"
    device: str = "auto"  #: auto | cpu | cuda | cuda:N
    data: DataConfig = field(default_factory=DataConfig)
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    grade: GradeConfig = field(default_factory=GradeConfig)
    slices: SlicesConfig = field(default_factory=SlicesConfig)


# --- loading ------------------------------------------------------------------------------------


def load_config(
    source: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> Config:
    """Load a config by name (`tiny`, `demo`, `full`) or YAML path, then apply `key=value`
    overrides."""
    data: dict[str, Any] = {}
    if source is not None:
        path = _resolve_config_path(source)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides:
        _set_dotted(data, *_parse_override(item))
    return from_dict(Config, data)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a (nested) mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(_join(where, k) for k in unknown)
        raise ConfigError(f"unknown config key(s): {names}; allowed: {', '.join(fields)}")
    kwargs = {k: _coerce(hints[k], v, _join(where, k)) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts (for YAML and JSON)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write the resolved config atomically as YAML."""
    return write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def available_configs() -> list[str]:
    """Names of the configs shipped with the package."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_config_path(source: str | Path) -> Path:
    path = Path(source)
    if path.is_file():
        return path
    named = CONFIG_DIR / f"{source}.yaml"
    if named.is_file():
        return named
    raise ConfigError(
        f"config {str(source)!r} not found: not a file, nor one of {available_configs()}"
    )


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override {item!r} is not of the form key=value (e.g. grade.optim.epochs=3)"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            names = ", ".join(map(str, allowed))
            raise ConfigError(f"{where}: expected one of {names}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return origin(_coerce(inner, v, where) for v in value)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _type_name(tp: Any) -> str:
    return "true/false" if tp is bool else getattr(tp, "__name__", str(tp))


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
