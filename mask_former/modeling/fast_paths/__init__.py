"""The CPU fast paths of the model, each in its own module beside its plain reference and the one function
that picks between them:

- :mod:`.mask_logits`: the mask logits' backward joined over the decoder layers, on the supervised queries
  only, and in bfloat16 inference their product on oneDNN reading channels-last features in place (reference: the
  einsum); picked by :func:`~.mask_logits.joins_mask_logits` and :func:`~.mask_logits.uses_onednn_mask_logits`.
- :mod:`.frozen_bn`: a frozen batch norm folded into the convolution before it (reference: detectron2's conv
  then norm); picked by :func:`~.frozen_bn.folds_frozen_batch_norm`.
- :mod:`.kept_queries`: panoptic and instance post-processing on the kept queries only (reference: the
  fixed-rank tensor stages on every query, which the exporter traces); picked by
  :func:`~.kept_queries.uses_kept_queries`.
- :mod:`.row_bands`: full-resolution post-processing a band of rows at a time, memory holding the outputs and one
  band (reference: :func:`~mask_former.modeling.postprocessing.full_size_inference` on whole ``[Q, H, W]``
  tensors); picked by :func:`~.row_bands.uses_row_bands`.
- :mod:`.recycled_memory`: the large CPU outputs of post-processing in the memory of earlier outputs that nothing
  refers to any more (reference: fresh memory, ``new_empty``); picked by
  ``MODEL.MASK_FORMER.TEST.RECYCLE_OUTPUT_MEMORY`` (:func:`~.recycled_memory.empty_output`).
- :mod:`.token_chunks`: the deformable encoder's layers in inference a chunk of tokens at a time after the value
  projection (reference: each step on every token at once); picked by :func:`~.token_chunks.uses_token_chunks`.
- :mod:`.masked_attention`: the decoder's masked cross-attention in inference on one fused attention kernel, the
  mask read once for all heads (reference: ``nn.MultiheadAttention`` with the mask copied per head); picked by
  :func:`~.masked_attention.uses_fused_attention`.

One more lives in :mod:`mask_former.layers`, below the deformable attention operator, which uses it too:

- :mod:`mask_former.layers.onednn_linear`: the linear layers (:class:`~mask_former.layers.onednn_linear.Linear`)
  in CPU inference (float32, or bfloat16 autocast) and ``sem_seg``'s float32 products on oneDNN's matrix product
  (reference: ``F.linear`` and ``torch.mm``); picked by :func:`~mask_former.layers.onednn_linear.uses_onednn_linear`
  and :func:`~mask_former.layers.onednn_linear.takes_onednn`.

The conditions they share (eval mode, no autograd, no graph being captured) are in
:mod:`mask_former.layers.graph_capture`.

Each has a test comparing it with its reference.
"""
