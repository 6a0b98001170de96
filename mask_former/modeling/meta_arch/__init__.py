from . import mask_former_head, mask_former_model, per_pixel_baseline
