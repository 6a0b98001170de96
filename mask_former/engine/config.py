"""Building the config of a run from a YAML file and command-line overrides, with clear errors."""
import logging
import os
from typing import Sequence

import yaml

from detectron2.config import CfgNode, get_cfg
from detectron2.projects.deeplab import add_deeplab_config

from ..config import add_maskformer2_config, add_maskformer2_video_config
from ..errors import ConfigError
from .launch import uses_cuda

__all__ = ["ConfigError", "build_config"]


def _config_error(source: str, error: Exception) -> ConfigError:
    # yacs puts its message ("Non-existent config key: X", "Type mismatch ... for config key: X")
    # in args[0]; str() of a KeyError would add quotes.
    message = error.args[0] if error.args else repr(error)
    return ConfigError(f"{source}: {message}")


def build_config(config_file: str = "", opts: Sequence[str] = (), *, freeze: bool = True) -> CfgNode:
    """
    detectron2's default config with the DeepLab, MaskFormer and Mask2Former-VIS keys, merged with ``config_file``
    (upstream MaskFormer / Mask2Former / Mask2Former-VIS YAML files work unchanged) and the ``opts`` overrides
    (``["KEY", "VALUE", ...]``).

    ``MODEL.DEVICE`` "cuda" (the default) becomes "cpu", with a warning, where CUDA is not
    available.

    Raises:
        ConfigError: the file does not exist or cannot be parsed, or a key is unknown, or a value
            has the wrong type; the message names the file or the key.
    """
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_maskformer2_config(cfg)
    add_maskformer2_video_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file {config_file!r} does not exist")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError, OSError, yaml.YAMLError) as e:
            raise _config_error(f"config file {config_file!r}", e) from e
    try:
        cfg.merge_from_list(list(opts))
    except (KeyError, ValueError, AssertionError) as e:
        raise _config_error("command-line options", e) from e
    if cfg.MODEL.DEVICE.startswith("cuda") and not uses_cuda(cfg.MODEL.DEVICE):
        logging.getLogger(__name__).warning(
            f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but CUDA is not available: using the CPU"
        )
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg
