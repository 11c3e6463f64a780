"""Locating the 25 targets of a study: where (series, slice, pixel) each condition/level is graded.

Design. One 2D heatmap network runs on *every* slice of a sagittal stack (each slice resized to a
fixed square, its two neighbours as extra input channels, all slices in one batch). Channel `i`
scores the canal at level `i`, channel `5 + i` a foramen at level `i`. The slice of a point is the
slice whose heatmap peak is highest; the in-plane point is a soft-argmax around that peak, mapped
back to the original pixel grid. Per-slice 2D inference keeps the model small and fast on CPU,
handles any slice count, and turns slice choice into a comparison of calibrated peak heights that
the training targets (peaks falling off with distance from the labelled slice) teach directly.

Laterality is geometry, never instance order: for foramina the Sagittal T1 slices are split at the
plane of the canal point of that level (from Sagittal T2/STIR, or the model's own canal estimate on
T1, or the stack centre), and the side whose slices have larger LPS x is the patient's left.

Axial: for each level the canal point's world position picks the nearest axial slice over all axial
stacks of the study (`nearest_axial_slice`), and a second heatmap network (channels left, right)
finds the subarticular points on it. Where Sagittal T2/STIR is missing, the sagittal model's canal
channels on Sagittal T1 (trained on T2 canal points projected into T1) stand in: that is the learned
fallback. Every target gets a row; `reason` says why when it cannot be located.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spinegrade.config import LocalizeConfig, from_dict
from spinegrade.constants import AXIAL_T2, LEVELS, SAGITTAL_T1, SAGITTAL_T2, TARGETS
from spinegrade.dicom import SliceHit, Study, Volume, nearest_axial_slice
from spinegrade.localize.dataset import (
    CANAL,
    FORAMEN,
    SUBARTICULAR,
    PreparedStacks,
    all_slice_inputs,
    main_stack,
)
from spinegrade.localize.decode import decode_heatmaps
from spinegrade.localize.model import HeatmapNet, HeatmapSpec
from spinegrade.localize.targets import from_heatmap
from spinegrade.training.checkpoint import load_checkpoint
from spinegrade.training.device import resolve_device
from spinegrade.training.runtime import Net, as_net

SAGITTAL_DIR, AXIAL_DIR, MODEL_FILE = "sagittal", "axial", "model.pt"
#: Columns of `Localizer.locate`'s table, in order.
LOCATION_COLUMNS = (
    "study_id",
    "series_id",
    "instance_number",
    "condition",
    "level",
    "x",
    "y",
    "stack_index",
    "slice_index",
    "world_x",
    "world_y",
    "world_z",
    "confidence",
    "method",
    "reason",
)


@dataclass
class Point:
    """A located point: its series/stack/slice, pixel (x = column, y = row), world LPS mm, score."""

    series_id: int
    stack_index: int
    slice_index: int
    instance_number: int
    x: float
    y: float
    world: np.ndarray
    confidence: float
    method: str


@dataclass
class StackHeat:
    """Decoded heatmaps of every slice of one stack: points `(slices, k, 2)` in original pixels."""

    series_id: int
    stack_index: int
    volume: Volume
    xy: np.ndarray
    peak: np.ndarray

    def point(self, s: int, channel: int, method: str) -> Point:
        """The decoded point of `channel` on slice `s`."""
        x, y = self.xy[s, channel]
        world = self.volume.voxel_to_world([[x, y, s]])[0]
        return Point(
            self.series_id,
            self.stack_index,
            int(s),
            int(self.volume.instance_numbers[s]),
            float(x),
            float(y),
            world,
            float(self.peak[s, channel]),
            method,
        )


@dataclass
class Localizer:
    """The trained stage 1: a sagittal (10-channel) and an axial (2-channel) heatmap network.

    The networks are `Net`s (`training.runtime`: torch or ONNX Runtime); a `HeatmapNet` given
    here is wrapped in a `TorchNet` on `device`, channels-last (faster on CPU).
    """

    sagittal: Net | HeatmapNet
    axial: Net | HeatmapNet
    cfg: LocalizeConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64

    def __post_init__(self) -> None:
        self.sagittal = as_net(self.sagittal, self.device, channels_last=True)
        self.axial = as_net(self.axial, self.device, channels_last=True)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Localizer:
        """Load from a `train_localizer` output folder (`sagittal/model.pt`, `axial/model.pt`)."""
        dev = resolve_device(device) if isinstance(device, str) else device
        sagittal, axial, cfg = load_heatmap_nets(path)
        return cls(sagittal, axial, cfg, dev)

    # --- inference
    # ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def heat(self, net: Net, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network on `images (n, 3, s, s)` -> decoded `xy (n, k, 2)` heatmap cells, `peak (n,
        k)`."""
        xy, peak = [], []
        for start in range(0, len(images), self.batch_size):
            logits = net(images[start : start + self.batch_size])  # (b, k, s/stride, s/stride)
            a, b = decode_heatmaps(torch.sigmoid(torch.from_numpy(logits)), self.cfg.sigma_px)
            xy.append(a.numpy())
            peak.append(b.numpy())
        return np.concatenate(xy), np.concatenate(peak)

    def stack_heat(
        self, study: Study, series_type: str, prepared: PreparedStacks
    ) -> StackHeat | None:
        """Run the sagittal network on every slice of the study's main stack of `series_type`."""
        found = main_stack(study, series_type)
        if found is None:
            return None
        series_id, vol = found
        stack_index = next(i for i, v in enumerate(study.first(series_type).stacks) if v is vol)
        xy, peak = self.heat(
            self.sagittal, all_slice_inputs(prepared.get(vol, self.cfg.image_size))
        )
        xy = from_heatmap(
            xy.reshape(-1, 2), vol.shape[1:], self.cfg.image_size, self.cfg.heatmap_stride
        ).reshape(xy.shape)
        return StackHeat(series_id, stack_index, vol, xy, peak)

    def locate(self, study: Study, prepared: PreparedStacks | None = None) -> pd.DataFrame:
        """All 25 targets of `study` -> one row each (`LOCATION_COLUMNS`), reason empty when
        located.

        `prepared` shares the normalised, resized stacks between several localisers (the folds of
        a run) that see the same study.
        """
        prepared = prepared or PreparedStacks()
        points: dict[tuple[str, str], Point | str] = {}
        t2, t1 = (
            self.stack_heat(study, SAGITTAL_T2, prepared),
            self.stack_heat(study, SAGITTAL_T1, prepared),
        )
        canal_src, method = (t2, "sagittal_t2") if t2 is not None else (t1, "sagittal_t1_fallback")
        for i, level in enumerate(LEVELS):
            if canal_src is None:
                points[(CANAL, level)] = "no Sagittal T2/STIR or Sagittal T1 series"
            else:
                points[(CANAL, level)] = canal_src.point(
                    int(canal_src.peak[:, i].argmax()), i, method
                )
        for i, level in enumerate(LEVELS):
            for cond, found in zip(FORAMEN, self._foramina(t1, points[(CANAL, level)], i)):
                points[(cond, level)] = found
        points.update(self._axial(study, {lv: points[(CANAL, lv)] for lv in LEVELS}, prepared))
        return location_table(study, points)

    def _foramina(
        self, t1: StackHeat | None, canal: Point | str, i: int
    ) -> tuple[Point | str, Point | str]:
        """Left and right foramen of level `i` on Sagittal T1, split at the canal plane."""
        if t1 is None:
            return "no Sagittal T1 series", "no Sagittal T1 series"
        n = t1.volume.shape[0]
        mid = (
            (n - 1) / 2
            if isinstance(canal, str)
            else float(t1.volume.world_to_voxel(canal.world[None])[0, 2])
        )
        offset = (np.arange(n) - mid) * np.sign(
            t1.volume.normal[0] or 1.0
        )  # > 0: larger LPS x = left
        out: list[Point | str] = []
        for side, name in ((offset > 0, "left"), (offset < 0, "right")):
            if not side.any():
                out.append(f"no Sagittal T1 slice {name} of the canal")
                continue
            cand = np.flatnonzero(side)
            out.append(
                t1.point(
                    int(cand[t1.peak[cand, len(LEVELS) + i].argmax()]),
                    len(LEVELS) + i,
                    "sagittal_t1",
                )
            )
        return out[0], out[1]

    def _axial(
        self, study: Study, canal: dict[str, Point | str], prepared: PreparedStacks
    ) -> dict[tuple[str, str], Point | str]:
        """Subarticular points: the axial slice nearest each level's canal point, then the axial
        net."""
        out: dict[tuple[str, str], Point | str] = {}
        jobs = []
        for level, hit in axial_slices(study, canal, self.cfg.max_axial_distance_mm).items():
            if isinstance(hit, str):
                out.update({(cond, level): hit for cond in SUBARTICULAR})
            else:
                jobs.append((level, hit))
        if not jobs:
            return out
        vols = {
            (h.series_id, h.stack_index): _stack(study, h.series_id, h.stack_index) for _, h in jobs
        }
        images = np.stack(
            [
                prepared.slice_input(
                    vols[(h.series_id, h.stack_index)], self.cfg.image_size, h.slice_index
                )
                for _, h in jobs
            ]
        )
        xy, peak = self.heat(self.axial, images)
        for (level, h), pxy, pk in zip(jobs, xy, peak):
            vol = vols[(h.series_id, h.stack_index)]
            heat = StackHeat(
                int(h.series_id),
                h.stack_index,
                vol,
                np.full((vol.shape[0], 2, 2), np.nan),
                np.zeros((vol.shape[0], 2)),
            )
            heat.xy[h.slice_index] = from_heatmap(
                pxy, vol.shape[1:], self.cfg.image_size, self.cfg.heatmap_stride
            )
            heat.peak[h.slice_index] = pk
            for c, cond in enumerate(SUBARTICULAR):
                out[(cond, level)] = heat.point(h.slice_index, c, "axial")
        return out


def load_heatmap_nets(path: str | Path) -> tuple[HeatmapNet, HeatmapNet, LocalizeConfig]:
    """The sagittal and axial networks (on CPU) and the config of a `train_localizer` folder."""
    nets, cfg = [], None
    for sub in (SAGITTAL_DIR, AXIAL_DIR):
        state = load_checkpoint(Path(path) / sub / MODEL_FILE)
        # the checkpoint's weights replace the starting ones: never fetch or read those again
        net = HeatmapNet(HeatmapSpec(**{**state["meta"]["spec"], "pretrained": False}))
        net.load_state_dict(state["model"])
        nets.append(net.eval())
        cfg = from_dict(LocalizeConfig, state["meta"]["localize"])
    return nets[0], nets[1], cfg  # type: ignore[return-value]


def axial_slices(
    study: Study, canal: dict[str, Point | str], max_distance_mm: float
) -> dict[str, SliceHit | str]:
    """Per level, the axial slice (over all axial stacks) nearest its canal point, or why there is
    none."""
    out: dict[str, SliceHit | str] = {}
    for level, c in canal.items():
        if not study.axial_stacks():
            out[level] = "no Axial T2 series"
        elif isinstance(c, str):
            out[level] = f"level not found on sagittal images ({c})"
        else:
            hit = nearest_axial_slice(study, c.world)
            if hit is None or hit.distance_mm > max_distance_mm:
                far = "" if hit is None else f" (nearest {hit.distance_mm:.1f} mm)"
                out[level] = f"no axial slice within {max_distance_mm:g} mm of the level{far}"
            else:
                out[level] = hit
    return out


def _stack(study: Study, series_id: int | None, stack_index: int) -> Volume:
    return next(s for s in study.of_type(AXIAL_T2) if s.series_id == series_id).stacks[stack_index]


def location_table(study: Study, points: dict[tuple[str, str], Point | str]) -> pd.DataFrame:
    """One row per target in `TARGETS` order."""
    rows = []
    for cond, level in TARGETS:
        p = points[(cond, level)]
        if isinstance(p, str):
            rows.append(
                (
                    study.study_id,
                    None,
                    None,
                    cond,
                    level,
                    np.nan,
                    np.nan,
                    None,
                    None,
                    np.nan,
                    np.nan,
                    np.nan,
                    0.0,
                    "",
                    p,
                )
            )
        else:
            rows.append(
                (
                    study.study_id,
                    p.series_id,
                    p.instance_number,
                    cond,
                    level,
                    p.x,
                    p.y,
                    p.stack_index,
                    p.slice_index,
                    *map(float, p.world),
                    p.confidence,
                    p.method,
                    "",
                )
            )
    df = pd.DataFrame(rows, columns=list(LOCATION_COLUMNS))
    for col in ("series_id", "instance_number", "stack_index", "slice_index"):
        df[col] = df[col].astype("Int64")
    return df


def locate_studies(
    model_dir: str | Path,
    study_dirs: list[Path],
    *,
    device: str = "auto",
    series_descriptions: pd.DataFrame | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Locate the targets of DICOM study folders -> (table of all rows, {folder: why it failed}).

    A study that cannot be read is skipped with its one-line reason; the others are still located.
    """
    from tqdm.auto import tqdm

    from spinegrade.dicom import load_study
    from spinegrade.errors import SpinegradeError

    localizer = Localizer.load(model_dir, device)
    tables, failed = [], {}
    for folder in tqdm(study_dirs, desc="localize", disable=not progress):
        try:
            tables.append(localizer.locate(load_study(folder, series_descriptions)))
        except SpinegradeError as exc:
            failed[str(folder)] = str(exc)
    table = pd.concat(tables, ignore_index=True) if tables else location_table_empty()
    return table, failed


def location_table_empty() -> pd.DataFrame:
    """A `locate` table with no rows."""
    return pd.DataFrame(columns=list(LOCATION_COLUMNS))
