"""timm backbones and their starting weights: random, from the hub (online), or a local file.

`pretrained` (the `grade.pretrained` / `localize.pretrained` config value) is one of

- `False`: random initialisation (the default; nothing is read or fetched);
- `True`: timm's default pretrained weights of the backbone, from the Hugging Face hub;
- a timm name with a tag of the same architecture (`resnet18.a1_in1k`), or `hf-hub:ORG/REPO`:
  those weights, from the hub (or its local cache);
- a local weights file (`.pth`, `.pt`, `.bin` or `.safetensors`, or any existing file): a timm
  model's `state_dict` (optionally under a `state_dict` / `model` key), loaded tensors-only.

Weights are loaded by timm itself, which also adapts the first convolution when the network takes
`in_chans != 3` channels (`timm.models.adapt_input_conv`: the RGB filters repeated and rescaled)
and drops the classifier. A file must fit the backbone exactly (every layer present, no layer of
another architecture); anything else is a one-line `ConfigError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
from torch import nn

from spinegrade.errors import ConfigError

#: Suffixes that make a `pretrained` string a weights file even before it exists.
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
HF_HUB = "hf-hub:"


def weights_file(pretrained: bool | str) -> Path | None:
    """The local file that `pretrained` names, or None when it is not a file request."""
    if isinstance(pretrained, bool):
        return None
    path = Path(pretrained).expanduser()
    return path if path.suffix in WEIGHT_SUFFIXES or path.is_file() else None


def check_pretrained(pretrained: bool | str, backbone: str, where: str = "pretrained") -> None:
    """Raise a one-line ConfigError when `pretrained` cannot give weights for `backbone`, without
    reading any weights (a missing file, a hub name of another architecture)."""
    if isinstance(pretrained, bool) or pretrained.startswith(HF_HUB):
        return
    path = weights_file(pretrained)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{where}: weights file {path} not found")
        return
    arch, _ = timm.models.split_model_name_tag(pretrained)
    if arch != backbone:
        raise ConfigError(
            f"{where}: {pretrained!r} is neither a weights file ({', '.join(WEIGHT_SUFFIXES)}) "
            f"nor a timm name of the backbone {backbone!r} (e.g. {backbone}.TAG or hf-hub:ORG/REPO)"
        )


def create_backbone(backbone: str, pretrained: bool | str = False, **kwargs: Any) -> nn.Module:
    """`timm.create_model(backbone, **kwargs)` starting from the weights `pretrained` names.

    `kwargs` are timm's (`in_chans`, `num_classes`, `features_only`, ...). Raises ConfigError for
    a missing, unreadable or mismatched weights file, or hub weights that cannot be fetched.
    """
    check_pretrained(pretrained, backbone)
    if pretrained is False:
        return timm.create_model(backbone, pretrained=False, **kwargs)
    path = weights_file(pretrained)
    if path is not None:
        return _from_file(backbone, path, **kwargs)
    overlay = {}
    name = backbone
    if isinstance(pretrained, str) and pretrained.startswith(HF_HUB):
        overlay = {"hf_hub_id": pretrained.removeprefix(HF_HUB), "source": "hf-hub"}
    elif isinstance(pretrained, str):
        name = pretrained
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, ... : one line
        raise ConfigError(
            f"pretrained weights {pretrained!r} of {backbone} could not be loaded "
            f"({type(exc).__name__}: {_first_line(exc)}); offline, give a local weights file"
        ) from None


def _from_file(backbone: str, path: Path, **kwargs: Any) -> nn.Module:
    """The backbone with `path`'s weights (timm's loader: tensors only, channels adapted)."""
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line naming it
        raise ConfigError(
            f"{path}: not a readable weights file ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    _check_fits(backbone, path, set(state))
    try:
        return timm.create_model(
            backbone, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs
        )
    except RuntimeError as exc:  # a tensor of another shape
        raise ConfigError(
            f"{path}: weights do not fit {backbone} ({_first_line(exc, skip_header=True)})"
        ) from None


def _check_fits(backbone: str, path: Path, keys: set[str]) -> None:
    """ConfigError unless the file's tensors are exactly those of `backbone` (classifier aside).

    timm loads non-strictly once it drops the classifier, so a file of a deeper or shallower
    network of the same family would otherwise load in part without a word.
    """
    reference = timm.create_model(backbone, pretrained=False)
    classifier = reference.pretrained_cfg.get("classifier") or ()
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)

    def body(names: set[str]) -> set[str]:
        return {k for k in names if not any(k.startswith(f"{h}.") for h in heads)}

    expected = body(set(reference.state_dict()))
    missing, extra = sorted(expected - body(keys)), sorted(body(keys) - expected)
    if missing or extra:
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise ConfigError(
            f"{path}: weights do not fit {backbone} ({len(missing)} tensors missing, "
            f"{len(extra)} unexpected, e.g. {what})"
        )


def _first_line(exc: BaseException, skip_header: bool = False) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if skip_header and len(lines) > 1:
        lines = lines[1:]
    return lines[0] if lines else type(exc).__name__
