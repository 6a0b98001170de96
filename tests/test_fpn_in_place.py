"""The FPN's ReLU and lateral sum written over the convolutions' fresh outputs (``relu_in_place``,
``add_upsampled``) against the out-of-place ``F.relu`` and ``+`` (reference): the same outputs and gradients, in
each pixel decoder that has an FPN."""
import pytest
import torch
from detectron2.modeling import build_model
from torch.nn import functional as F

from helpers import tiny_cfg
from mask_former.modeling.pixel_decoder import fpn, msdeformattn


def use_out_of_place(model, monkeypatch):
    """The reference: ``add_upsampled`` as ``+`` wherever it was imported, and the convolutions' ``F.relu``."""
    monkeypatch.setattr(fpn, "add_upsampled", lambda lateral_y, up: lateral_y + up)
    monkeypatch.setattr(msdeformattn, "add_upsampled", lambda lateral_y, up: lateral_y + up)
    for conv in model.modules():
        if getattr(conv, "activation", None) is fpn.relu_in_place:
            conv.activation = F.relu


def decoder_outputs_and_gradients(model, features):
    decoder = model.sem_seg_head.pixel_decoder
    decoder.zero_grad()
    mask_features, _, multi_scale = decoder.forward_features(features)
    outputs = [mask_features, *multi_scale]
    sum(o.square().mean() for o in outputs).backward()
    gradients = {name: p.grad.clone() for name, p in decoder.named_parameters() if p.grad is not None}
    return [o.detach() for o in outputs], gradients


@pytest.mark.parametrize("pixel_decoder", ["MSDeformAttnPixelDecoder", "BasePixelDecoder"])
def test_in_place_fpn_gives_the_reference_outputs_and_gradients(pixel_decoder, monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_cfg(pixel_decoder=pixel_decoder, transformer_decoder="MultiScaleMaskedTransformerDecoder")
    model = build_model(cfg).train()
    assert any(getattr(m, "activation", None) is fpn.relu_in_place for m in model.modules())
    with torch.no_grad():
        features = model.backbone(torch.randn(1, 3, 64, 64))
    in_place = decoder_outputs_and_gradients(model, features)
    use_out_of_place(model, monkeypatch)
    reference = decoder_outputs_and_gradients(model, features)
    torch.testing.assert_close(in_place, reference, rtol=0, atol=0)
