"""Typed configs: YAML by name or path, `key=value` overrides, unknown keys and wrong types
refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinegrade.config import (
    Config,
    ViewsConfig,
    available_configs,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from spinegrade.errors import ConfigError


def test_every_shipped_config_loads_and_round_trips(tmp_path: Path) -> None:
    assert {"tiny", "demo", "full"} <= set(available_configs())
    for name in available_configs():
        cfg = load_config(name)
        assert cfg.name == name
        save_config(cfg, tmp_path / f"{name}.yaml")
        assert load_config(tmp_path / f"{name}.yaml") == cfg


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(
        "tiny",
        [
            "grade.optim.epochs=3",
            "grade.optim.lr=1",
            "data.max_studies=null",
            "localize.pretrained=true",
            "device=cpu",
        ],
    )
    assert (
        cfg.grade.optim.epochs == 3
        and cfg.grade.optim.lr == 1.0
        and isinstance(cfg.grade.optim.lr, float)
    )
    assert cfg.data.max_studies is None and cfg.localize.pretrained is True and cfg.device == "cpu"
    assert load_config("tiny").grade.optim.epochs != 3  # the file itself is untouched


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grade.optim.epoch=3"], "unknown config key(s): grade.optim.epoch"),
        (["grade.optim.epochs=three"], "grade.optim.epochs: expected int"),
        (["grade.optim.epochs=true"], "grade.optim.epochs: expected an integer"),
        (["localize.pretrained=1"], "localize.pretrained: expected true/false"),
        (["grade.optim=3"], "grade.optim: expected a mapping"),
        (["epochs"], "not of the form key=value"),
        (["device.x=1"], "'device' is not a section"),
        (
            ["grade.views.spinal=coronal"],
            "grade.views.spinal: expected one of sagittal, axial, both, got 'coronal'",
        ),
        (["grade.views.canal=axial"], "unknown config key(s): grade.views.canal"),
        (
            ["slices.decode=chain"],
            "slices.decode: expected one of peak, ordered, series, got 'chain'",
        ),
        (["grade.views=both"], "grade.views: expected a mapping"),
    ],
)
def test_bad_overrides_are_one_line_errors(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("tiny", overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_names_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("no-such-config")
    (tmp_path / "bad.yaml").write_text("grade: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(tmp_path / "list.yaml")


def test_from_dict_inverts_to_dict() -> None:
    cfg = load_config("demo")
    assert from_dict(Config, to_dict(cfg)) == cfg


def test_views_per_condition_group_default_to_one_crop_per_target() -> None:
    cfg = load_config("tiny")
    assert (cfg.grade.views.spinal, cfg.grade.views.foraminal) == ("sagittal", "sagittal")
    assert cfg.grade.views.subarticular == "axial"
    cfg = load_config("tiny", ["grade.views.spinal=both", "grade.views.subarticular=sagittal"])
    assert cfg.grade.views == ViewsConfig(spinal="both", subarticular="sagittal")
    assert from_dict(Config, to_dict(cfg)) == cfg
