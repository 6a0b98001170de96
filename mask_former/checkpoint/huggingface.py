"""Conversion between Hugging Face ``transformers``' ``Mask2FormerForUniversalSegmentation`` (Swin
backbone) and our Mask2Former (``D2SwinTransformer`` + ``MSDeformAttnPixelDecoder`` +
``MultiScaleMaskedTransformerDecoder``), both ways.

The parameters map one to one (:data:`RENAMES`), except that Hugging Face splits the query / key /
value projections that we keep as one matrix (Swin's ``qkv``, the decoder self-attention's
``in_proj_*``), and that our Swin saves its relative position index (a function of the window size)
and Hugging Face's Swin has a final layer norm that Mask2Former does not use.

Hugging Face names are those of the files (``save_pretrained`` writes transformers 4.x names, which
``from_pretrained`` reads); the names of transformers 5.x models in memory are accepted as well.
Reading needs only ``safetensors`` (or torch for ``pytorch_model.bin``); ``transformers`` is not
imported.
"""
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import yaml
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

from ..config import build_config
from ..errors import HuggingFaceConversionError
from ..modeling.backbone.swin import relative_position_index
from .checkpointer import MaskFormerCheckpointer
from .files import atomic_write, load_weights_only

__all__ = [
    "HuggingFaceConversionError",
    "convert_from_hf",
    "convert_to_hf",
    "hf_config_to_ours",
    "hf_state_dict_to_ours",
    "ours_config_to_hf",
    "ours_state_dict_to_hf",
    "read_hf_config",
    "read_hf_weights",
]

# Hugging Face prefixes of the backbone, pixel decoder and transformer decoder, and ours.
_HF_SWIN = "model.pixel_level_module.encoder."
_HF_PIXEL = "model.pixel_level_module.decoder."
_HF_DECODER = "model.transformer_module."
_PIXEL = "sem_seg_head.pixel_decoder."
_PREDICTOR = "sem_seg_head.predictor."
_BLOCK = "encoder.layers.{s}.blocks.{b}."
_OUR_BLOCK = "backbone.layers.{s}.blocks.{b}."
_DEC_LAYER = _HF_DECODER + "decoder.layers.{l}."
NUM_SWIN_STAGES = 4

# (Hugging Face name prefix, our name prefix); "{x}" stands for a number, kept as it is.
RENAMES: Tuple[Tuple[str, str], ...] = (
    (_HF_SWIN + "embeddings.patch_embeddings.projection.", "backbone.patch_embed.proj."),
    (_HF_SWIN + "embeddings.norm.", "backbone.patch_embed.norm."),
    (_HF_SWIN + _BLOCK + "layernorm_before.", _OUR_BLOCK + "norm1."),
    (_HF_SWIN + _BLOCK + "attention.self.qkv.", _OUR_BLOCK + "attn.qkv."),
    (_HF_SWIN + _BLOCK + "attention.self.relative_position_", _OUR_BLOCK + "attn.relative_position_"),
    (_HF_SWIN + _BLOCK + "attention.output.dense.", _OUR_BLOCK + "attn.proj."),
    (_HF_SWIN + _BLOCK + "layernorm_after.", _OUR_BLOCK + "norm2."),
    (_HF_SWIN + _BLOCK + "intermediate.dense.", _OUR_BLOCK + "mlp.fc1."),
    (_HF_SWIN + _BLOCK + "output.dense.", _OUR_BLOCK + "mlp.fc2."),
    (_HF_SWIN + "encoder.layers.{s}.downsample.", "backbone.layers.{s}.downsample."),
    *((_HF_SWIN + f"hidden_states_norms.stage{i + 1}.", f"backbone.norm{i}.") for i in range(NUM_SWIN_STAGES)),
    (_HF_PIXEL + "level_embed", _PIXEL + "transformer.level_embed"),
    (_HF_PIXEL + "input_projections.{l}.", _PIXEL + "input_proj.{l}."),
    (_HF_PIXEL + "encoder.layers.{l}.self_attn.", _PIXEL + "transformer.encoder.layers.{l}.self_attn."),
    (_HF_PIXEL + "encoder.layers.{l}.self_attn_layer_norm.", _PIXEL + "transformer.encoder.layers.{l}.norm1."),
    (_HF_PIXEL + "encoder.layers.{l}.fc1.", _PIXEL + "transformer.encoder.layers.{l}.linear1."),
    (_HF_PIXEL + "encoder.layers.{l}.fc2.", _PIXEL + "transformer.encoder.layers.{l}.linear2."),
    (_HF_PIXEL + "encoder.layers.{l}.final_layer_norm.", _PIXEL + "transformer.encoder.layers.{l}.norm2."),
    (_HF_PIXEL + "mask_projection.", _PIXEL + "mask_features."),
    (_HF_PIXEL + "adapter_{k}.0.", _PIXEL + "adapter_{k}."),
    (_HF_PIXEL + "adapter_{k}.1.", _PIXEL + "adapter_{k}.norm."),
    (_HF_PIXEL + "layer_{k}.0.", _PIXEL + "layer_{k}."),
    (_HF_PIXEL + "layer_{k}.1.", _PIXEL + "layer_{k}.norm."),
    (_HF_DECODER + "queries_embedder.", _PREDICTOR + "query_embed."),
    (_HF_DECODER + "queries_features.", _PREDICTOR + "query_feat."),
    (_HF_DECODER + "level_embed.", _PREDICTOR + "level_embed."),
    (_HF_DECODER + "input_projections.{l}.", _PREDICTOR + "input_proj.{l}."),
    (_DEC_LAYER + "self_attn.in_proj_", _PREDICTOR + "transformer_self_attention_layers.{l}.self_attn.in_proj_"),
    (_DEC_LAYER + "self_attn.out_proj.", _PREDICTOR + "transformer_self_attention_layers.{l}.self_attn.out_proj."),
    (_DEC_LAYER + "self_attn_layer_norm.", _PREDICTOR + "transformer_self_attention_layers.{l}.norm."),
    (_DEC_LAYER + "cross_attn.", _PREDICTOR + "transformer_cross_attention_layers.{l}.multihead_attn."),
    (_DEC_LAYER + "cross_attn_layer_norm.", _PREDICTOR + "transformer_cross_attention_layers.{l}.norm."),
    (_DEC_LAYER + "fc1.", _PREDICTOR + "transformer_ffn_layers.{l}.linear1."),
    (_DEC_LAYER + "fc2.", _PREDICTOR + "transformer_ffn_layers.{l}.linear2."),
    (_DEC_LAYER + "final_layer_norm.", _PREDICTOR + "transformer_ffn_layers.{l}.norm."),
    (_HF_DECODER + "decoder.layernorm.", _PREDICTOR + "decoder_norm."),
    (_HF_DECODER + "decoder.mask_predictor.mask_embedder.{k}.0.", _PREDICTOR + "mask_embed.layers.{k}."),
    ("class_predictor.", _PREDICTOR + "class_embed."),
    ("criterion.empty_weight", "criterion.empty_weight"),
)

# The names of transformers 5.x Swin modules in memory -> the names of the files.
_IN_MEMORY_NAMES = (
    (r"^model\.pixel_level_module\.encoder\.swin\.(encoder|embeddings)\.", r"model.pixel_level_module.encoder.\1."),
    (r"\.attention\.q_proj\.", ".attention.self.query."),
    (r"\.attention\.k_proj\.", ".attention.self.key."),
    (r"\.attention\.v_proj\.", ".attention.self.value."),
    (r"\.attention\.o_proj\.", ".attention.output.dense."),
    (r"\.attention\.relative_position_bias\.relative_position_bias_table$",
     ".attention.self.relative_position_bias_table"),
    (r"(\.blocks\.\d+)\.mlp\.fc1\.", r"\1.intermediate.dense."),
    (r"(\.blocks\.\d+)\.mlp\.fc2\.", r"\1.output.dense."),
)
# Hugging Face's Swin has a final layer norm that Mask2Former does not use (not in transformers 4.x files).
_HF_UNUSED_FINAL_NORM = _HF_SWIN + "swin.layernorm."
_HF_RELATIVE_POSITION_INDEX = re.compile(r"\.attention\.self\.relative_position_index$")


@dataclass(frozen=True)
class _SplitProjection:
    """Query, key and value projections that Hugging Face keeps apart and we keep as one matrix
    (query rows first): ``split`` matches each of the three, ``fused`` names their concatenation."""

    split: str
    parts: Tuple[str, str, str]
    fused: str

    def split_pattern(self) -> re.Pattern:
        return re.compile(self.split.replace("{part}", "(?P<part>" + "|".join(self.parts) + ")") + "$")

    def fused_pattern(self) -> re.Pattern:
        return re.compile(self.fused + "$")


_SPLIT_PROJECTIONS = (
    _SplitProjection(
        r"(?P<prefix>.*\.blocks\.\d+\.attention\.self)\.{part}\.(?P<kind>weight|bias)",
        ("query", "key", "value"),
        r"(?P<prefix>.*\.blocks\.\d+\.attention\.self)\.qkv\.(?P<kind>weight|bias)",
    ),
    _SplitProjection(
        r"(?P<prefix>model\.transformer_module\.decoder\.layers\.\d+\.self_attn)\.{part}_proj\.(?P<kind>weight|bias)",
        ("q", "k", "v"),
        r"(?P<prefix>model\.transformer_module\.decoder\.layers\.\d+\.self_attn)\.in_proj_(?P<kind>weight|bias)",
    ),
)
_FUSED_NAMES = {0: "{prefix}.qkv.{kind}", 1: "{prefix}.in_proj_{kind}"}
_SPLIT_NAMES = {0: "{prefix}.{part}.{kind}", 1: "{prefix}.{part}_proj.{kind}"}


def _prefix_pattern(template: str) -> re.Pattern:
    """``template`` with each ``{x}`` matching a number (group ``x``), then any tail (group ``tail``)."""
    pieces = re.split(r"\{(\w+)\}", template)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>\\d+)" for i, p in enumerate(pieces))
    return re.compile(f"^{regex}(?P<tail>.*)$")


_RULES = [(_prefix_pattern(hf), hf, _prefix_pattern(ours), ours) for hf, ours in RENAMES]


def _rename(name: str, hf_to_ours: bool) -> Optional[str]:
    """The name on the other side, or None if no rule matches. Where several rules match (``adapter_1.``
    and ``adapter_1.norm.``), the one with the longest prefix wins."""
    renamed = {}
    for hf_pattern, hf, our_pattern, ours in _RULES:
        (pattern, source), target = ((hf_pattern, hf), ours) if hf_to_ours else ((our_pattern, ours), hf)
        match = pattern.match(name)
        if match:
            fields = match.groupdict()
            renamed[len(source)] = target.format(**fields) + fields["tail"]
    return renamed[max(renamed)] if renamed else None


def _fuse_projections(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Concatenate the split query / key / value projections of ``state`` (Hugging Face names)."""
    fused, groups = {}, {}
    for name, tensor in state.items():
        for index, projection in enumerate(_SPLIT_PROJECTIONS):
            match = projection.split_pattern().match(name)
            if match:
                key = _FUSED_NAMES[index].format(prefix=match["prefix"], kind=match["kind"])
                groups.setdefault(key, (projection, {}))[1][match["part"]] = (name, tensor)
                break
        else:
            fused[name] = tensor
    for key, (projection, parts) in groups.items():
        missing = [part for part in projection.parts if part not in parts]
        if missing:
            present = ", ".join(name for name, _ in parts.values())
            raise HuggingFaceConversionError(f"the checkpoint has {present} but not the {missing} projection(s)")
        fused[key] = torch.cat([parts[part][1] for part in projection.parts])
    return fused


def _split_projections(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The inverse of :func:`_fuse_projections`."""
    split = {}
    for name, tensor in state.items():
        for index, projection in enumerate(_SPLIT_PROJECTIONS):
            match = projection.fused_pattern().match(name)
            if match:
                for part, chunk in zip(projection.parts, tensor.chunk(3)):
                    split[_SPLIT_NAMES[index].format(part=part, **match.groupdict())] = chunk.clone()
                break
        else:
            split[name] = tensor
    return split


def _file_names(name: str) -> str:
    for pattern, replacement in _IN_MEMORY_NAMES:
        name = re.sub(pattern, replacement, name)
    return name


def hf_state_dict_to_ours(hf_state: Mapping[str, torch.Tensor], *, window_size: int) -> Dict[str, torch.Tensor]:
    """
    A Hugging Face ``Mask2FormerForUniversalSegmentation`` state dict (Swin backbone) in our names.

    Args:
        hf_state: Hugging Face names (of a file, or of a transformers 5.x model in memory) -> tensors.
        window_size (`int`): the Swin window size (``backbone_config.window_size``): our relative
            position indices are made for it.

    Returns:
        our names -> tensors, every parameter and buffer of our model built by :func:`hf_config_to_ours`.

    Raises:
        HuggingFaceConversionError: names it does not know (listed), or a relative position index
            other than Swin's.
    """
    state = {}
    expected_index = relative_position_index(window_size)
    for name, tensor in hf_state.items():
        name = _file_names(name)
        if name.startswith(_HF_UNUSED_FINAL_NORM):
            continue
        if _HF_RELATIVE_POSITION_INDEX.search(name):
            if not torch.equal(tensor.long(), expected_index):
                raise HuggingFaceConversionError(f"{name} is not Swin's relative position index (window {window_size})")
            continue
        state[name] = tensor
    ours, unknown = {}, []
    for name, tensor in _fuse_projections(state).items():
        renamed = _rename(name, hf_to_ours=True)
        if renamed is None:
            unknown.append(name)
        else:
            ours[renamed] = tensor
    if unknown:
        raise HuggingFaceConversionError(f"{len(unknown)} parameter(s) of the checkpoint are unknown: {unknown}")
    for name in list(ours):
        if name.endswith(".attn.relative_position_bias_table"):
            ours[name.replace("_bias_table", "_index")] = expected_index.clone()
    return ours


def ours_state_dict_to_hf(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """
    The inverse of :func:`hf_state_dict_to_ours`, in the names of Hugging Face files. Hugging Face's
    unused final Swin layer norm is written as an identity (ones and zeros).

    Raises:
        HuggingFaceConversionError: names of ``state`` that Hugging Face's model has no place for (listed).
    """
    hf, unknown = {}, []
    for name, tensor in state.items():
        if name.endswith(".attn.relative_position_index"):
            continue
        renamed = _rename(name, hf_to_ours=False)
        if renamed is None:
            unknown.append(name)
        else:
            hf[renamed] = tensor.contiguous()
    if unknown:
        raise HuggingFaceConversionError(
            f"{len(unknown)} parameter(s) have no place in Hugging Face's Mask2Former: {sorted(unknown)}"
        )
    last_norm = hf[_HF_SWIN + f"hidden_states_norms.stage{NUM_SWIN_STAGES}.weight"]
    hf[_HF_UNUSED_FINAL_NORM + "weight"] = torch.ones_like(last_norm)
    hf[_HF_UNUSED_FINAL_NORM + "bias"] = torch.zeros_like(last_norm)
    return _split_projections(hf)


# ---------------------------------------------------------------------------------------------
# Configs.

# (Hugging Face Mask2Former key, our key), equal values.
CONFIG_KEYS = (
    ("num_labels", "MODEL.SEM_SEG_HEAD.NUM_CLASSES"),
    ("ignore_value", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE"),
    ("feature_size", "MODEL.SEM_SEG_HEAD.CONVS_DIM"),
    ("mask_feature_size", "MODEL.SEM_SEG_HEAD.MASK_DIM"),
    ("encoder_layers", "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"),
    ("common_stride", "MODEL.SEM_SEG_HEAD.COMMON_STRIDE"),
    ("hidden_dim", "MODEL.MASK_FORMER.HIDDEN_DIM"),
    ("num_queries", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"),
    ("num_attention_heads", "MODEL.MASK_FORMER.NHEADS"),
    ("dim_feedforward", "MODEL.MASK_FORMER.DIM_FEEDFORWARD"),
    # Upstream's DEC_LAYERS counts the prediction from the learnable queries: DEC_LAYERS - 1 layers, as HF's.
    ("decoder_layers", "MODEL.MASK_FORMER.DEC_LAYERS"),
    ("dropout", "MODEL.MASK_FORMER.DROPOUT"),
    ("pre_norm", "MODEL.MASK_FORMER.PRE_NORM"),
    ("enforce_input_projection", "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ"),
    ("use_auxiliary_loss", "MODEL.MASK_FORMER.DEEP_SUPERVISION"),
    ("no_object_weight", "MODEL.MASK_FORMER.NO_OBJECT_WEIGHT"),
    ("class_weight", "MODEL.MASK_FORMER.CLASS_WEIGHT"),
    ("mask_weight", "MODEL.MASK_FORMER.MASK_WEIGHT"),
    ("dice_weight", "MODEL.MASK_FORMER.DICE_WEIGHT"),
    ("train_num_points", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS"),
    ("oversample_ratio", "MODEL.MASK_FORMER.OVERSAMPLE_RATIO"),
    ("importance_sample_ratio", "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO"),
)
SWIN_KEYS = (
    ("embed_dim", "MODEL.SWIN.EMBED_DIM"),
    ("depths", "MODEL.SWIN.DEPTHS"),
    ("num_heads", "MODEL.SWIN.NUM_HEADS"),
    ("window_size", "MODEL.SWIN.WINDOW_SIZE"),
    ("patch_size", "MODEL.SWIN.PATCH_SIZE"),
    ("mlp_ratio", "MODEL.SWIN.MLP_RATIO"),
    ("qkv_bias", "MODEL.SWIN.QKV_BIAS"),
    ("image_size", "MODEL.SWIN.PRETRAIN_IMG_SIZE"),
    ("hidden_dropout_prob", "MODEL.SWIN.DROP_RATE"),
    ("attention_probs_dropout_prob", "MODEL.SWIN.ATTN_DROP_RATE"),
    ("drop_path_rate", "MODEL.SWIN.DROP_PATH_RATE"),
)
# transformers' defaults of the keys above, for config.json files that leave them out.
HF_DEFAULTS = {
    "ignore_value": 255, "feature_size": 256, "mask_feature_size": 256, "encoder_layers": 6, "common_stride": 4,
    "hidden_dim": 256, "num_queries": 100, "num_attention_heads": 8, "dim_feedforward": 2048, "decoder_layers": 10,
    "dropout": 0.0, "pre_norm": False, "enforce_input_projection": False, "use_auxiliary_loss": True,
    "no_object_weight": 0.1, "class_weight": 2.0, "mask_weight": 5.0, "dice_weight": 5.0, "train_num_points": 12544,
    "oversample_ratio": 3.0, "importance_sample_ratio": 0.75,
}
SWIN_DEFAULTS = {
    "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": 7, "patch_size": 4,
    "mlp_ratio": 4.0, "qkv_bias": True, "image_size": 224, "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.1,
}
# Hugging Face keys whose other values our model cannot represent: key -> (value, why).
HF_FIXED = {
    "activation_function": ("relu", "our transformer layers use ReLU"),
    "encoder_feedforward_dim": (1024, "our deformable encoder's feed-forward width is upstream's 1024"),
    "feature_strides": ([4, 8, 16, 32], "the Swin stages have these strides"),
}
SWIN_FIXED = {
    "hidden_act": ("gelu", "D2SwinTransformer uses GELU"),
    "layer_norm_eps": (1e-5, "D2SwinTransformer's layer norms use eps 1e-5"),
    "use_absolute_embeddings": (False, "D2SwinTransformer's absolute position embedding has another layout"),
    "num_channels": (3, "images have 3 channels"),
    "out_features": (["stage1", "stage2", "stage3", "stage4"], "Mask2Former uses the four Swin stages"),
}
# The model of our configs, whatever the Hugging Face config says.
OUR_FIXED = {
    "MODEL.META_ARCHITECTURE": "MaskFormer",
    "MODEL.BACKBONE.NAME": "D2SwinTransformer",
    "MODEL.SWIN.APE": False,
    "MODEL.SWIN.PATCH_NORM": True,
    "MODEL.SWIN.QK_SCALE": None,
    "MODEL.SWIN.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.NAME": "MaskFormerHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": "MSDeformAttnPixelDecoder",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS": 4,
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": "MultiScaleMaskedTransformerDecoder",
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": "multi_scale_pixel_decoder",
    "INPUT.FORMAT": "RGB",
}
# MODEL.MASK_FORMER.TEST of each task, as upstream's configs set it.
TASK_TEST_KEYS = {
    "semantic": {"SEMANTIC_ON": True, "INSTANCE_ON": False, "PANOPTIC_ON": False},
    "instance": {"SEMANTIC_ON": False, "INSTANCE_ON": True, "PANOPTIC_ON": False},
    "panoptic": {"SEMANTIC_ON": True, "INSTANCE_ON": True, "PANOPTIC_ON": True},
}
# Hugging Face's image processor defaults (ImageNet statistics of images scaled to [0, 1]).
HF_IMAGE_MEAN = [0.485, 0.456, 0.406]
HF_IMAGE_STD = [0.229, 0.224, 0.225]


def _check_fixed(config: Mapping, fixed: Mapping, where: str) -> None:
    for key, (value, why) in fixed.items():
        if key in config and config[key] != value and not (isinstance(value, float) and config[key] == value):
            raise HuggingFaceConversionError(f"{where}{key} is {config[key]!r}; only {value!r} is supported: {why}")


def _backbone_config(config: Mapping) -> Mapping:
    backbone = config.get("backbone_config")
    if backbone is None:
        name = config.get("backbone")
        raise HuggingFaceConversionError(
            f"config.json has no backbone_config{f' (backbone {name!r})' if name else ''}: only a Swin backbone "
            "given by backbone_config (model_type 'swin') can be converted"
        )
    if backbone.get("model_type") != "swin":
        raise HuggingFaceConversionError(
            f"the backbone is {backbone.get('model_type')!r} (config.json backbone_config.model_type); "
            "only 'swin' is supported (our D2SwinTransformer)"
        )
    return backbone


def hf_config_to_ours(config: Mapping, preprocessor: Optional[Mapping] = None, *, task: str = "semantic") -> Dict:
    """
    Our config (``{"MODEL": {...}, "INPUT": {...}}``, for ``build_config``) of a Hugging Face
    ``Mask2FormerConfig`` dict (``config.json``) and its image processor's ``preprocessor_config.json``.

    Args:
        config: ``config.json``.
        preprocessor: ``preprocessor_config.json``, or None for the processor's defaults.
        task: ``semantic``, ``instance`` or ``panoptic``: the inference outputs (``MODEL.MASK_FORMER.TEST``).

    Raises:
        HuggingFaceConversionError: another model type or backbone, or values our model cannot represent.
    """
    if config.get("model_type") != "mask2former":
        raise HuggingFaceConversionError(
            f"config.json is of model_type {config.get('model_type')!r}; only 'mask2former' is supported"
        )
    if task not in TASK_TEST_KEYS:
        raise HuggingFaceConversionError(f"task {task!r} is not one of {sorted(TASK_TEST_KEYS)}")
    backbone = _backbone_config(config)
    _check_fixed(config, HF_FIXED, "config.json ")
    _check_fixed(backbone, SWIN_FIXED, "config.json backbone_config.")
    config, backbone = {**HF_DEFAULTS, **config}, {**SWIN_DEFAULTS, **backbone}
    flat = dict(OUR_FIXED)
    flat.update({ours: config[hf] for hf, ours in CONFIG_KEYS if hf != "num_labels"})
    flat["MODEL.SEM_SEG_HEAD.NUM_CLASSES"] = len(hf_class_names(config)) or config.get("num_labels", 2)
    flat.update({ours: backbone[hf] for hf, ours in SWIN_KEYS})
    flat.update({f"MODEL.MASK_FORMER.TEST.{key}": value for key, value in TASK_TEST_KEYS[task].items()})
    if task != "semantic":  # upstream's thresholds of instance and panoptic inference
        flat["MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD"] = flat["MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD"] = 0.8
    flat["MODEL.PIXEL_MEAN"], flat["MODEL.PIXEL_STD"] = _pixel_statistics(preprocessor or {})
    return _nested(flat)


def _pixel_statistics(preprocessor: Mapping) -> Tuple[List[float], List[float]]:
    """Our PIXEL_MEAN / PIXEL_STD (0-255 images) of a Hugging Face processor that rescales
    (by ``rescale_factor``, 1/255) then normalizes with ``image_mean`` / ``image_std``."""
    scale = preprocessor.get("rescale_factor", 1 / 255) if preprocessor.get("do_rescale", True) else 1.0
    if preprocessor.get("do_normalize", True):
        mean, std = preprocessor.get("image_mean", HF_IMAGE_MEAN), preprocessor.get("image_std", HF_IMAGE_STD)
    else:
        mean, std = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return [round(m / scale, 6) for m in mean], [round(s / scale, 6) for s in std]


def _nested(flat: Mapping) -> Dict:
    nested = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return nested


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if isinstance(node, tuple) else node


def ours_config_to_hf(cfg, class_names: Sequence[str]) -> Tuple[Dict, Dict]:
    """
    ``(config.json, preprocessor_config.json)`` of Hugging Face's ``Mask2FormerForUniversalSegmentation``
    for our config ``cfg`` (a ``CfgNode``).

    Raises:
        HuggingFaceConversionError: naming a key of ``cfg`` whose value Hugging Face's model cannot represent.
    """
    for key, value in OUR_FIXED.items():
        if key != "INPUT.FORMAT" and _get(cfg, key) != value:
            raise HuggingFaceConversionError(
                f"{key} is {_get(cfg, key)!r}; Hugging Face's Mask2Former (Swin) needs {value!r}"
            )
    if len(cfg.MODEL.SWIN.DEPTHS) != NUM_SWIN_STAGES:
        raise HuggingFaceConversionError(f"MODEL.SWIN.DEPTHS {list(cfg.MODEL.SWIN.DEPTHS)} must have 4 stages")
    if len(class_names) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
        raise HuggingFaceConversionError(
            f"{len(class_names)} class names for MODEL.SEM_SEG_HEAD.NUM_CLASSES {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}"
        )
    swin = {hf: _get(cfg, ours) for hf, ours in SWIN_KEYS}
    swin.update({key: value for key, (value, _) in SWIN_FIXED.items()})
    swin.update(model_type="swin", stage_names=["stem"] + SWIN_FIXED["out_features"][0], out_indices=[1, 2, 3, 4])
    config = {hf: _get(cfg, ours) for hf, ours in CONFIG_KEYS if hf != "num_labels"}
    config.update({key: value for key, (value, _) in HF_FIXED.items()})
    id2label = {str(i): name for i, name in enumerate(class_names)}
    config.update(
        architectures=["Mask2FormerForUniversalSegmentation"],
        model_type="mask2former",
        backbone_config=swin,
        use_pretrained_backbone=False,
        id2label=id2label,
        label2id={name: i for i, name in enumerate(class_names)},
    )
    rgb = cfg.INPUT.FORMAT == "RGB"
    if not rgb and cfg.INPUT.FORMAT != "BGR":
        raise HuggingFaceConversionError(f"INPUT.FORMAT {cfg.INPUT.FORMAT!r}: only RGB and BGR are supported")
    order = slice(None) if rgb else slice(None, None, -1)  # Hugging Face's processor gives RGB images
    mean, std = list(cfg.MODEL.PIXEL_MEAN)[order], list(cfg.MODEL.PIXEL_STD)[order]
    preprocessor = {
        "image_processor_type": "Mask2FormerImageProcessor",
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [round(m / 255, 6) for m in mean],
        "image_std": [round(s / 255, 6) for s in std],
        "ignore_index": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        "size_divisor": cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY,
        "num_labels": len(class_names),
    }
    return config, preprocessor


# ---------------------------------------------------------------------------------------------
# Files.


def _read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # only where a model is converted

    return load_file(path)


def read_hf_config(path: str) -> Tuple[Dict, Optional[Dict]]:
    """
    ``(config.json, preprocessor_config.json or None)`` of a Hugging Face model directory.

    Raises:
        HuggingFaceConversionError: the directory has no config.json.
    """
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise HuggingFaceConversionError(f"{config_file} does not exist: expected a Hugging Face model directory")
    with open(config_file) as f:
        config = json.load(f)
    preprocessor_file = os.path.join(path, "preprocessor_config.json")
    if not os.path.isfile(preprocessor_file):
        return config, None
    with open(preprocessor_file) as f:
        return config, json.load(f)


def read_hf_weights(path: str) -> Dict[str, torch.Tensor]:
    """
    The state dict of a Hugging Face model directory (``save_pretrained``'s layout): from
    ``model.safetensors`` (or its sharded index) or ``pytorch_model.bin`` (read with
    ``torch.load(weights_only=True)``).

    Raises:
        HuggingFaceConversionError: the directory has none of these files.
    """
    safetensors_file = os.path.join(path, "model.safetensors")
    index_file = safetensors_file + ".index.json"
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(safetensors_file):
        return _read_safetensors(safetensors_file)
    if os.path.isfile(index_file):
        with open(index_file) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        return {k: v for shard in shards for k, v in _read_safetensors(os.path.join(path, shard)).items()}
    if os.path.isfile(bin_file):
        return load_weights_only(bin_file)
    raise HuggingFaceConversionError(
        f"{path} has no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def class_names_yaml(names: Sequence[str]) -> str:
    """The ``classes:`` key of a dataset description file (format semantic), in contiguous-id order."""
    header = (
        "# Class names in the order of the model's outputs: the 'classes' key of a dataset description\n"
        "# file (format semantic; see README, \"Your own data\"), or --classes of convert_hf_mask2former.py --to-hf.\n"
    )
    return header + yaml.safe_dump({"classes": list(names)}, sort_keys=False, allow_unicode=True)


def read_class_names(path: str) -> List[str]:
    """The ``classes`` of a YAML / JSON file (names, or mappings with a "name").

    Raises:
        HuggingFaceConversionError: the file has no such list.
    """
    with open(path) as f:
        classes = yaml.safe_load(f)
    classes = classes.get("classes") if isinstance(classes, dict) else None
    if not isinstance(classes, list):
        raise HuggingFaceConversionError(f"{path} has no 'classes' list")
    return [entry["name"] if isinstance(entry, dict) else str(entry) for entry in classes]


def hf_class_names(config: Mapping) -> List[str]:
    """The class names of a Hugging Face config (``id2label``), in id order."""
    id2label = config.get("id2label") or {}
    return [id2label[key] for key in sorted(id2label, key=int)]


# ---------------------------------------------------------------------------------------------
# Directories.


def _check_state_fits(cfg, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Our model built from ``cfg`` takes ``state`` exactly (every key, every shape)."""
    model = build_model(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise HuggingFaceConversionError(f"the weights converted from {source} do not fit the model of its config: {e}")


def convert_from_hf(hf_dir: str, out_dir: str, *, task: str = "semantic") -> Dict[str, str]:
    """
    Convert a Hugging Face ``Mask2FormerForUniversalSegmentation`` directory into ``out_dir``:
    ``model.pth`` (``{"model": our state dict}``), ``config.yaml`` (our config, ``MODEL.WEIGHTS``
    naming that ``model.pth``) and ``classes.yaml`` (the class names, see :func:`class_names_yaml`).

    Returns:
        ``{"weights": ..., "config": ..., "classes": ...}``: the paths written.

    Raises:
        HuggingFaceConversionError: see :func:`read_hf_config`, :func:`read_hf_weights`,
            :func:`hf_config_to_ours` and :func:`hf_state_dict_to_ours`.
    """
    config, preprocessor = read_hf_config(hf_dir)
    our_config = hf_config_to_ours(config, preprocessor, task=task)
    state = hf_state_dict_to_ours(read_hf_weights(hf_dir), window_size=our_config["MODEL"]["SWIN"]["WINDOW_SIZE"])
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.abspath(os.path.join(out_dir, file)) for name, file in OUTPUT_FILES.items()}
    our_config["MODEL"]["WEIGHTS"] = paths["weights"]
    with open(paths["config"], "w") as f:
        f.write(f"# Converted from {os.path.abspath(hf_dir)} by tools/convert_hf_mask2former.py\n")
        yaml.safe_dump({**our_config, "VERSION": 2}, f, sort_keys=False, default_flow_style=None)
    _check_state_fits(build_config(paths["config"]), state, hf_dir)
    atomic_write(paths["weights"], lambda f: torch.save({"model": state}, f))
    with open(paths["classes"], "w") as f:
        f.write(class_names_yaml(hf_class_names(config)))
    return paths


OUTPUT_FILES = {"weights": "model.pth", "config": "config.yaml", "classes": "classes.yaml"}


def config_class_names(cfg) -> List[str]:
    """Class names of the config's first test (else training) dataset, where its metadata has as many
    as ``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` (``stuff_classes``, else ``thing_classes``); else ``LABEL_i``."""
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        metadata = MetadataCatalog.get(name)
        for key in ("stuff_classes", "thing_classes"):
            names = metadata.get(key)
            if names is not None and len(names) == num_classes:
                return list(names)
    return [f"LABEL_{i}" for i in range(num_classes)]


def convert_to_hf(config_file: str, weights: str, out_dir: str, *, classes_file: Optional[str] = None) -> str:
    """
    Write a directory that ``Mask2FormerForUniversalSegmentation.from_pretrained(out_dir)`` loads:
    ``config.json``, ``preprocessor_config.json`` and ``model.safetensors``, for our config and a
    checkpoint of it that sets every parameter.

    Args:
        config_file: our config.
        weights: a checkpoint of that model (``.pth`` or ``.pkl``).
        out_dir: the directory to write.
        classes_file: the class names (a ``classes`` list, e.g. ``classes.yaml`` of
            :func:`convert_from_hf` or a dataset description); default :func:`config_class_names`.

    Returns:
        ``out_dir``.

    Raises:
        HuggingFaceConversionError: the config is not a Mask2Former with a Swin backbone, or keys
            have no place in Hugging Face's model; ``CheckpointError``: weights that do not fit.
    """
    from safetensors.torch import save_file  # only where a model is converted

    cfg = build_config(config_file)
    names = read_class_names(classes_file) if classes_file else config_class_names(cfg)
    config, preprocessor = ours_config_to_hf(cfg, names)
    model = build_model(cfg)
    MaskFormerCheckpointer(model, for_inference=True).load(weights)
    hf_state = ours_state_dict_to_hf(model.state_dict())
    os.makedirs(out_dir, exist_ok=True)
    for file, content in (("config.json", config), ("preprocessor_config.json", preprocessor)):
        with open(os.path.join(out_dir, file), "w") as f:
            json.dump(content, f, indent=2)
    save_file(hf_state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    return out_dir
