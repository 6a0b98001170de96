"""Parameter groups equal upstream's (MaskFormer v1's and Mask2Former's Trainer.build_optimizer,
which agree), parameter by parameter, against a plain restatement of upstream's rules."""
import pytest
from detectron2.modeling import build_model
from torch import nn

from helpers import tiny_cfg
from mask_former.engine.optimizer import build_optimizer


def upstream_hyperparams(cfg, module_name, module, param_name):
    """Upstream's loop body, rule by rule, later rules overriding earlier ones."""
    lr, weight_decay = cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY
    if "backbone" in module_name:
        lr = lr * cfg.SOLVER.BACKBONE_MULTIPLIER
    if "relative_position_bias_table" in param_name or "absolute_pos_embed" in param_name:
        weight_decay = 0.0
    norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm1d,
             nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm)
    if isinstance(module, norms):
        weight_decay = cfg.SOLVER.WEIGHT_DECAY_NORM
    if isinstance(module, nn.Embedding):
        weight_decay = cfg.SOLVER.WEIGHT_DECAY_EMBED
    return lr, weight_decay


@pytest.mark.parametrize("decoders", [
    ("MSDeformAttnPixelDecoder", "MultiScaleMaskedTransformerDecoder", "multi_scale_pixel_decoder"),
    ("BasePixelDecoder", "MultiScaleMaskedTransformerDecoder", "res5"),  # a v1 config
    ("TransformerEncoderPixelDecoder", "StandardTransformerDecoder", "transformer_encoder"),
])
def test_param_groups_equal_upstreams(decoders):
    cfg = tiny_cfg(*decoders)
    cfg.MODEL.SWIN.APE = True
    cfg.SOLVER.BASE_LR, cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0, 0.1
    cfg.SOLVER.WEIGHT_DECAY, cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.5, 0.25, 0.125
    model = build_model(cfg)
    expected, seen = [], set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if param.requires_grad and param not in seen:
                seen.add(param)
                expected.append((param, *upstream_hyperparams(cfg, module_name, module, param_name)))
    groups = build_optimizer(cfg, model).param_groups
    assert len(groups) == len(expected)
    for group, (param, lr, weight_decay) in zip(groups, expected):
        assert group["params"] == [param]
        assert (group["lr"], group["weight_decay"]) == (lr, weight_decay)
    decays = {name: wd for (name, _), (_, _, wd) in zip(model.named_parameters(), expected)}
    if "MSDeform" in decoders[0]:
        assert decays["sem_seg_head.pixel_decoder.transformer.level_embed"] == 0.5
    assert decays["backbone.absolute_pos_embed"] == 0.0
