"""Stage 1 on PNG slices: the project's heatmap localiser, five channels (one per level).

A Sagittal T1 slice was marked for one side; the five channels are the five levels' foramina of
that side. A slice carries points only for the levels marked on it (the others are often marked
on a neighbouring slice): those channels are *unknown*, not negatives, and are masked out of the
loss (`localize.train.heatmap_loss`, mask `(b, 5)`). A slice marked for both sides is two samples.

Input: the slice letterboxed into a square of `localize.image_size` pixels with its nominal
spacing (`InputFrame`: isotropic, centred, zero padded), the same slice as each of the three input
channels the localiser's dataset cuts (`slice_input`). At prediction each asked target decodes
its level's channel on its own slice (soft-argmax around the peak, `decode_heatmaps`), or, with
`slices.decode: ordered`, with the five levels kept in order down the slice (`decode_ordered`),
or, with `series`, with each level found on the mean map of its series' asked slices and then
near there on its own slice (`decode_grouped`: within a series the slices share one image grid,
and a level's left and right foramina lie a few pixels apart); the decoded point's height is its
confidence.

`MeanPosition` is the baseline: the mean point per level in normalised image coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.ndimage import map_coordinates

from spinegrade.config import Config, LocalizeConfig, SlicesConfig, from_dict, to_dict
from spinegrade.constants import LEVELS
from spinegrade.dicom.geometry import Volume
from spinegrade.grade.crops import normalize_crop
from spinegrade.localize.dataset import HeatmapDataset, SliceSample, all_slice_inputs
from spinegrade.localize.decode import decode_grouped, decode_heatmaps, decode_ordered
from spinegrade.localize.model import HeatmapNet, HeatmapSpec
from spinegrade.localize.targets import from_heatmap
from spinegrade.localize.train import build_net, heatmap_loss
from spinegrade.training.checkpoint import load_checkpoint
from spinegrade.training.device import resolve_device
from spinegrade.training.loop import fit

#: Intensity percentiles mapped to 0 and 1 (those of `localize.dataset.prepare_stack`).
PERCENTILES = (1.0, 99.5)


@dataclass(frozen=True)
class InputFrame:
    """The map between a slice's PNG pixels and the square network input.

    `centre (2,)`: the PNG pixel (x, y) at the input's centre; `scale (2,)`: input pixels per PNG
    pixel along x and y (proportional to the nominal spacing, so the input is isotropic); `size`:
    the input's side; `mm_per_pixel`: the input's spacing. Pixel centres sit at integer
    coordinates (`localize.targets`' convention).
    """

    centre: np.ndarray
    scale: np.ndarray
    size: int
    mm_per_pixel: float  #: of the input (isotropic)

    @classmethod
    def of(cls, volume: Volume, size: int) -> InputFrame:
        """The frame in which the whole slice fits, centred, its longer side (in mm) `size`."""
        _, rows, cols = volume.shape
        dx, dy, _ = volume.spacing
        side_mm = max(cols * dx, rows * dy)
        return cls(
            np.array([(cols - 1) / 2, (rows - 1) / 2]),
            np.array([dx, dy]) * size / side_mm,
            size,
            side_mm / size,
        )

    def to_input(self, xy: np.ndarray) -> np.ndarray:
        """PNG pixels `(n, 2)` (x, y) -> input pixels `(n, 2)`."""
        return (np.asarray(xy, dtype=np.float64) - self.centre) * self.scale + (self.size - 1) / 2

    def from_input(self, uv: np.ndarray) -> np.ndarray:
        """Input pixels `(n, 2)` -> PNG pixels `(n, 2)` (inverse of :meth:`to_input`)."""
        return (np.asarray(uv, dtype=np.float64) - (self.size - 1) / 2) / self.scale + self.centre

    def resample(self, image: np.ndarray) -> np.ndarray:
        """`(rows, cols)` -> `(size, size)` float32, bilinear, 0 outside the image."""
        grid = np.arange(self.size, dtype=np.float64)
        uv = np.stack(np.meshgrid(grid, grid, indexing="xy"), axis=-1).reshape(-1, 2)
        xy = self.from_input(uv)
        out = map_coordinates(image.astype(np.float32), [xy[:, 1], xy[:, 0]], order=1, cval=0.0)
        return out.reshape(self.size, self.size).astype(np.float32)


def prepare(volume: Volume, size: int) -> tuple[np.ndarray, InputFrame]:
    """A one-slice volume -> its network input `(1, size, size)` float16 in [0, 1] and frame."""
    frame = InputFrame.of(volume, size)
    image = normalize_crop(frame.resample(volume.pixels[0]), *PERCENTILES)
    return image[None].astype(np.float16), frame


@dataclass
class Prepared:
    """The network inputs of many slices, keyed by their file: `stacks[i]` `(1, s, s)` float16
    and `frames[i]`, `index[file] = i`."""

    stacks: list[np.ndarray]
    frames: list[InputFrame]
    index: dict[str, int]

    @classmethod
    def of(cls, volumes: dict[str, Volume], size: int) -> Prepared:
        """Prepare every volume of `volumes` (file -> one-slice volume)."""
        stacks, frames, index = [], [], {}
        for file, vol in volumes.items():
            stack, frame = prepare(vol, size)
            index[file] = len(stacks)
            stacks.append(stack)
            frames.append(frame)
        return cls(stacks, frames, index)


def samples(
    points: pd.DataFrame, files: dict[tuple[int, int, int], str], prepared: Prepared
) -> list[SliceSample]:
    """One `SliceSample` per (slice, side) of `points` (`study_id, series_id, instance_number,
    condition, level, x, y`): the marked levels' points in input pixels, amplitude 1 and mask 1;
    the other levels NaN, 0 and 0 (unknown, so not trained on)."""
    out = []
    key = ["study_id", "series_id", "instance_number", "condition"]
    for (sid, ser, inst, _), rows in points.groupby(key, sort=True):
        i = prepared.index[files[(int(sid), int(ser), int(inst))]]
        xy = np.full((len(LEVELS), 2), np.nan)
        mask = np.zeros(len(LEVELS), np.float32)
        for r in rows.itertuples(index=False):
            if np.isfinite(r.x) and np.isfinite(r.y):
                lv = LEVELS.index(r.level)
                xy[lv] = prepared.frames[i].to_input([[r.x, r.y]])[0]
                mask[lv] = 1.0
        if mask.any():
            out.append(SliceSample(i, 0, xy, mask.astype(np.float64), mask))
    return out


def dataset(
    prepared: Prepared, items: list[SliceSample], cfg: LocalizeConfig, *, augment: bool
) -> HeatmapDataset:
    """The localiser's dataset over prepared slices (no flips: a slice shows one side)."""
    return HeatmapDataset(
        prepared.stacks, items, cfg.image_size, cfg.heatmap_stride, cfg.sigma_px, augment=augment
    )


def train_localizer(
    prepared: Prepared,
    train_items: list[SliceSample],
    val_items: list[SliceSample],
    out_dir: str | Path,
    cfg: Config,
    *,
    progress: bool = True,
) -> Path:
    """Fit the 5-channel heatmap net (resumable: the loop's `last.pt`); returns `model.pt`."""
    lcfg = cfg.localize
    net = build_net(lcfg, len(LEVELS))
    result = fit(
        net,
        dataset(prepared, train_items, lcfg, augment=True),
        dataset(prepared, val_items, lcfg, augment=False) if val_items else None,
        heatmap_loss(lcfg.pos_weight),
        lcfg.optim,
        out_dir,
        device=resolve_device(cfg.device),
        num_workers=cfg.data.num_workers,
        desc="slices: localise",
        seed=cfg.data.seed,
        meta={"localize": to_dict(lcfg), "spec": net.spec.to_dict(), "samples": len(train_items)},
        progress=progress,
    )
    return result.checkpoint


@dataclass
class SliceLocalizer:
    """A trained stage 1: the heatmap net and its config."""

    net: HeatmapNet
    cfg: LocalizeConfig
    device: torch.device
    batch_size: int = 32

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> SliceLocalizer:
        """From a `model.pt` written by :func:`train_localizer`."""
        dev = resolve_device(device) if isinstance(device, str) else device
        state = load_checkpoint(path, map_location=dev)
        # the checkpoint's weights replace the starting ones: never fetch or read those again
        net = HeatmapNet(HeatmapSpec(**{**state["meta"]["spec"], "pretrained": False}))
        net.load_state_dict(state["model"])
        return cls(net.to(dev).eval(), from_dict(LocalizeConfig, state["meta"]["localize"]), dev)

    @torch.inference_mode()
    def maps(self, stacks: Sequence[np.ndarray], zoom: float = 0.0) -> torch.Tensor:
        """Prepared slices `(1, s, s)` each -> heatmaps `(n, 5, s / stride, s / stride)` in 0-1;
        with `zoom` > 0 the mean of those at zooms 1, 1 + zoom and 1 - zoom (`zoomed_maps`)."""
        out = []
        for start in range(0, len(stacks), self.batch_size):
            images = np.concatenate(
                [all_slice_inputs(s) for s in stacks[start : start + self.batch_size]]
            )
            batch = torch.from_numpy(images).to(self.device)
            if zoom > 0:
                out.append(zoomed_maps(self._sigmoid_net, batch, (1.0, 1.0 + zoom, 1.0 - zoom)))
            else:
                out.append(self._sigmoid_net(batch))
        cells = self.cfg.image_size // self.cfg.heatmap_stride
        return torch.cat(out) if out else torch.zeros((0, len(LEVELS), cells, cells))

    def _sigmoid_net(self, images: torch.Tensor) -> torch.Tensor:
        """`(b, 3, s, s)` -> heatmaps `(b, 5, s / stride, s / stride)` float32 in 0-1."""
        return torch.sigmoid(self.net(images).float())

    def heat(
        self,
        stacks: Sequence[np.ndarray],
        frames: Sequence[InputFrame],
        cfg: SlicesConfig,
        series: Sequence[int],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Prepared slices `(1, s, s)` each, their frames and a series label each `(n,)` ->
        decoded `xy (n, 5, 2)` (input pixels) and `peak (n, 5)`, as `cfg.decode` says: each
        channel at its peak, with the levels kept in order down each slice (`decode_ordered`), or
        found on each series' mean map (`decode_grouped`)."""
        size, stride, sigma = self.cfg.image_size, self.cfg.heatmap_stride, self.cfg.sigma_px
        heat = self.maps(stacks, cfg.localize_zoom)
        mm_per_cell = np.array([frame.mm_per_pixel * stride for frame in frames])
        gaps, floor = cfg.level_gap_mm / mm_per_cell, cfg.centroid_floor
        if cfg.decode == "peak":
            cells, top = decode_heatmaps(heat, sigma, floor)
        elif cfg.decode == "ordered":
            cells, top = decode_ordered(heat, sigma, gaps, floor=floor)
        else:
            radii = cfg.series_radius_mm / mm_per_cell
            cells, top = decode_grouped(heat, sigma, gaps, series, radii, floor=floor)
        xy = from_heatmap(cells.cpu().numpy().reshape(-1, 2), (size, size), size, stride)
        return xy.reshape(cells.shape), top.cpu().numpy()

    def locate(
        self, keys: pd.DataFrame, prepared: Prepared, cfg: SlicesConfig | None = None
    ) -> pd.DataFrame:
        """`keys` (one target per row, with its `study_id`, `series_id`, `level` and its slice's
        `file`) -> the keys with the predicted PNG `x`, `y` and `confidence` (the heatmap peak,
        0-1), decoded as `cfg.decode` says (default: each level at its channel's peak)."""
        files = keys["file"].tolist()
        order = sorted(set(files), key=prepared.index.__getitem__)
        stacks = [prepared.stacks[prepared.index[f]] for f in order]
        frames = [prepared.frames[prepared.index[f]] for f in order]
        cfg = cfg if cfg is not None else SlicesConfig()
        xy, peak = self.heat(stacks, frames, cfg, series_labels(keys, order))
        at = {f: i for i, f in enumerate(order)}
        rows = np.array([at[f] for f in files], dtype=np.int64)
        levels = np.array([LEVELS.index(lv) for lv in keys["level"]], dtype=np.int64)
        pts = np.zeros((len(keys), 2))
        for i, (f, r, lv) in enumerate(zip(files, rows, levels)):
            pts[i] = prepared.frames[prepared.index[f]].from_input(xy[r, lv][None])[0]
        out = keys.copy()
        out["x"], out["y"] = pts[:, 0], pts[:, 1]
        out["confidence"] = peak[rows, levels] if len(rows) else np.zeros(0)
        return out


def zoom_about_centre(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """`(b, c, h, w)` magnified `zoom` times about its centre (bilinear, 0 outside): output
    pixel at normalised position p (pixel centres, `align_corners=False`) is input's p / zoom."""
    theta = x.new_tensor([[1.0 / zoom, 0.0, 0.0], [0.0, 1.0 / zoom, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def zoomed_maps(
    net: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, zooms: Sequence[float]
) -> torch.Tensor:
    """Heatmaps of `images (b, c, s, s)` averaged over `zooms`: each zoom's input magnified
    about the centre, its maps `(b, k, h, w)` shrunk back into the unzoomed frame and averaged
    where they cover it (a zoom in does not see the input's rim)."""
    total = cover = torch.zeros(())
    for z in zooms:
        maps = net(zoom_about_centre(images, z))
        total = total + zoom_about_centre(maps, 1.0 / z)
        cover = cover + zoom_about_centre(torch.ones_like(maps[:, :1]), 1.0 / z)
    return total / cover.clamp_min(1e-6)


def series_labels(keys: pd.DataFrame, files: Sequence[str]) -> list[int]:
    """A label per file of `files`: the same for the slices of one (study, series) of `keys`."""
    series = keys.drop_duplicates("file").set_index("file").loc[list(files)]
    codes, _ = pd.factorize(pd.MultiIndex.from_frame(series[["study_id", "series_id"]]))
    return codes.tolist()


@dataclass
class MeanPosition:
    """The baseline: per level, the mean point `(u, v)` in normalised image coordinates
    (`((x + 0.5) / cols, (y + 0.5) / rows)`) of the training points."""

    means: dict[str, np.ndarray]

    @classmethod
    def fit(cls, points: pd.DataFrame) -> MeanPosition:
        """From `level, x, y, rows, cols` rows (rows, cols: the PNG's size)."""
        u = (points["x"] + 0.5) / points["cols"]
        v = (points["y"] + 0.5) / points["rows"]
        table = pd.DataFrame({"level": points["level"], "u": u, "v": v}).dropna()
        means = table.groupby("level")[["u", "v"]].mean()
        return cls({lv: means.loc[lv].to_numpy() for lv in means.index})

    def locate(self, keys: pd.DataFrame) -> pd.DataFrame:
        """`keys` with `level, rows, cols` -> the keys with `x`, `y` at the level's mean (NaN for
        a level without training points)."""
        uv = np.array([self.means.get(lv, (np.nan, np.nan)) for lv in keys["level"]]).reshape(-1, 2)
        out = keys.copy()
        out["x"] = uv[:, 0] * keys["cols"].to_numpy() - 0.5
        out["y"] = uv[:, 1] * keys["rows"].to_numpy() - 0.5
        return out
