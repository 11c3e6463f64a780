"""Stage 1 on slices: the letterbox frame, samples that mask unmarked levels, the masked loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from spinegrade.constants import LEVELS
from spinegrade.localize.train import heatmap_loss
from spinegrade.slices.grade import load_volumes, slice_files
from spinegrade.slices.inputs import SliceFolder
from spinegrade.slices.localize import (
    InputFrame,
    MeanPosition,
    Prepared,
    prepare,
    samples,
    series_labels,
    zoom_about_centre,
    zoomed_maps,
)
from spinegrade.slices.volumes import slice_volume

from .conftest import fast_config


def test_the_frame_maps_points_where_the_resampled_image_puts_them() -> None:
    png = np.zeros((250, 250), np.uint8)
    png[180, 60] = 255  # one bright pixel (row 180, col 60)
    vol = slice_volume(png, (540, 384), 300.0)  # rows were squeezed: the letterbox pads columns
    image, frame = prepare(vol, 96)
    u, v = frame.to_input([[60, 180]])[0]
    resampled = frame.resample(png)
    peak = np.unravel_index(np.argmax(resampled), resampled.shape)
    assert abs(peak[1] - u) <= 1 and abs(peak[0] - v) <= 1
    np.testing.assert_allclose(frame.from_input(frame.to_input([[60.3, 180.7]])), [[60.3, 180.7]])
    assert frame.scale[0] < frame.scale[1]  # a PNG column is narrower (in mm) than a row is tall
    assert image.shape == (1, 96, 96) and image.dtype == np.float16


def test_a_sample_supervises_only_the_levels_marked_on_its_slice(slices_folder: Path) -> None:
    folder = SliceFolder.open(slices_folder, truth=True)
    cfg = fast_config("slices_cpu")
    volumes = load_volumes(folder, cfg)
    prepared = Prepared.of(volumes, 64)
    items = samples(folder.points, slice_files(folder), prepared)
    assert len(items) == len(folder.slices)  # one (slice, side) each here
    marked = folder.points.groupby(["study_id", "series_id", "instance_number"])["level"].apply(set)
    for item, file in zip(items, sorted(prepared.index, key=prepared.index.get)):
        row = folder.slices[folder.slices.file == file].iloc[0]
        levels = marked[(row.study_id, row.series_id, row.instance_number)]
        expected = [float(lv in levels) for lv in LEVELS]
        assert item.mask.tolist() == expected
        assert np.isfinite(item.points[:, 0]).tolist() == [bool(e) for e in expected]


def test_the_loss_ignores_masked_channels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, requires_grad=True)
    target = torch.rand(2, 5, 8, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.float32)
    loss = heatmap_loss(10.0)(logits, {"target": target, "mask": mask})
    loss.backward()
    grad = logits.grad.abs().sum(dim=(2, 3))
    assert (grad[mask == 0] == 0).all() and (grad[mask == 1] > 0).all()
    # and the masked channels' targets do not matter at all
    other = target.clone()
    other[mask == 0] = 1.0 - other[mask == 0]
    again = heatmap_loss(10.0)(logits.detach(), {"target": other, "mask": mask})
    assert float(again) == pytest.approx(float(loss.detach()))


def test_the_mean_position_baseline_is_the_mean_normalised_point() -> None:
    train = pd.DataFrame(
        {"level": ["l1_l2", "l1_l2", "l2_l3"], "x": [9.5, 19.5, 4.5], "y": [4.5, 14.5, 9.5],
         "rows": [50, 100, 50], "cols": [50, 100, 50]}
    )  # fmt: skip
    base = MeanPosition.fit(train)
    np.testing.assert_allclose(base.means["l1_l2"], [0.2, 0.125])
    asked = pd.DataFrame({"level": ["l1_l2", "l4_l5"], "rows": [200, 200], "cols": [100, 100]})
    out = base.locate(asked)
    assert out["x"].iloc[0] == pytest.approx(19.5) and out["y"].iloc[0] == pytest.approx(24.5)
    assert np.isnan(out["x"].iloc[1])  # a level without training points


def test_the_frame_of_a_square_slice_is_the_identity_at_its_size() -> None:
    vol = slice_volume(np.zeros((64, 64), np.uint8), (128, 128), 64.0)
    frame = InputFrame.of(vol, 64)
    np.testing.assert_allclose(frame.to_input([[3.0, 40.0]]), [[3.0, 40.0]])


def test_a_target_decodes_back_to_its_png_point(slices_folder: Path) -> None:
    """The training target of a marked point, decoded the way prediction decodes the network's
    heatmap, lands on the point again: the pixel conventions of every step agree."""
    import torch

    from spinegrade.localize.decode import decode_heatmaps
    from spinegrade.localize.targets import from_heatmap
    from spinegrade.slices.localize import dataset

    folder = SliceFolder.open(slices_folder, truth=True)
    cfg = fast_config("slices_cpu", "localize.image_size=96")
    prepared = Prepared.of(load_volumes(folder, cfg), 96)
    items = samples(folder.points, slice_files(folder), prepared)
    data = dataset(prepared, items, cfg.localize, augment=False)
    files = sorted(prepared.index, key=prepared.index.get)
    for i in (0, 1, 2):  # study 1000: its original is not square
        target = data[i]["target"]
        cells, _ = decode_heatmaps(target[None], cfg.localize.sigma_px)
        uv = from_heatmap(cells[0].numpy(), (96, 96), 96, cfg.localize.heatmap_stride)
        xy = prepared.frames[items[i].stack].from_input(uv)
        row = folder.slices[folder.slices.file == files[items[i].stack]].iloc[0]
        truth = folder.points[
            (folder.points.study_id == row.study_id)
            & (folder.points.instance_number == row.instance_number)
        ]
        for r in truth.itertuples():
            np.testing.assert_allclose(xy[LEVELS.index(r.level)], [r.x, r.y], atol=0.3)
        assert torch.count_nonzero(data[i]["mask"]) == len(truth)


def test_the_localiser_learns_where_the_foramina_are(tmp_path: Path) -> None:
    """Trained on 7 generated studies (~10 s), it finds the held-out studies' foramina better than
    the mean position does: each study's spine sits elsewhere, so only the image tells where."""
    from spinegrade.slices.localize import SliceLocalizer, train_localizer
    from spinegrade.slices.predict import asked

    from .conftest import write_slices_folder

    torch.set_num_threads(1)
    torch.manual_seed(0)
    folder = SliceFolder.open(write_slices_folder(tmp_path / "d", studies=10, seed=3), truth=True)
    cfg = fast_config("slices_cpu", "localize.optim.epochs=12", "localize.optim.lr=0.003")
    prepared = Prepared.of(load_volumes(folder, cfg), cfg.localize.image_size)
    ids = folder.studies()
    train, held = folder.subset(ids[:7]), folder.subset(ids[7:])
    items = samples(train.points, slice_files(folder), prepared)
    path = train_localizer(prepared, items, [], tmp_path / "loc", cfg, progress=False)
    keys = asked(held)
    found = SliceLocalizer.load(path).locate(keys, prepared)
    truth = held.points.set_index(["study_id", "condition", "level"])
    at = truth.loc[list(zip(found.study_id, found.condition, found.level))]
    model = np.hypot(found.x.to_numpy() - at.x.to_numpy(), found.y.to_numpy() - at.y.to_numpy())
    shapes = train.points.assign(rows=64, cols=64)
    base = MeanPosition.fit(shapes).locate(keys.assign(rows=64, cols=64))
    baseline = np.hypot(base.x.to_numpy() - at.x.to_numpy(), base.y.to_numpy() - at.y.to_numpy())
    assert np.median(model) < 0.7 * np.median(baseline)
    assert found["confidence"].between(0, 1).all()


def test_the_slices_of_one_series_share_a_label() -> None:
    keys = pd.DataFrame(
        {
            "study_id": [1, 1, 1, 1, 2],
            "series_id": [10, 10, 11, 10, 10],
            "file": ["a", "a", "c", "b", "d"],
        }
    )
    # files b and a are study 1's series 10; c is its other series; d another study's series 10
    assert series_labels(keys, ["b", "c", "a", "d"]) == [0, 1, 0, 2]


def _blob(size: int, u: float, v: float, sigma: float = 2.0) -> torch.Tensor:
    """A Gaussian `(1, 1, size, size)` centred on pixel (u, v) (x, y)."""
    grid = torch.arange(size, dtype=torch.float64)
    g = torch.exp(-((grid[None, :] - u) ** 2 + (grid[:, None] - v) ** 2) / (2 * sigma**2))
    return g[None, None].float()


def _centroid(x: torch.Tensor) -> tuple[float, float]:
    grid = torch.arange(x.shape[-1], dtype=torch.float64)
    w = x[0, 0].double()
    return float((w.sum(0) * grid).sum() / w.sum()), float((w.sum(1) * grid).sum() / w.sum())


def test_a_zoom_moves_a_point_away_from_the_centre_by_its_factor() -> None:
    # 64 px: the centre is pixel 31.5; x1.25 takes (40, 20) to 31.5 + 1.25 * (8.5, -11.5)
    u, v = _centroid(zoom_about_centre(_blob(64, 40.0, 20.0), 1.25))
    assert u == pytest.approx(42.125, abs=0.05) and v == pytest.approx(17.125, abs=0.05)


def test_zoomed_maps_put_each_zoom_back_in_the_unzoomed_frame() -> None:
    # a "net" whose heatmap is its input at half the resolution (a stride-2 map): every zoom's map,
    # put back, has its peak where the unzoomed one has it
    def net(images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(images, 2)

    image = _blob(64, 40.0, 20.0, sigma=3.0)
    plain = net(image)
    mean = zoomed_maps(net, image, (1.0, 1.15, 0.85))
    assert mean.shape == plain.shape
    np.testing.assert_allclose(_centroid(mean), _centroid(plain), atol=0.05)
    # a zoom in does not see the rim: there the mean is that of the zooms that do
    rim = zoomed_maps(net, torch.ones(1, 1, 64, 64), (1.0, 1.5))
    assert torch.allclose(rim, torch.ones_like(rim), atol=1e-5)
