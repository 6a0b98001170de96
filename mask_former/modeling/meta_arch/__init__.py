from . import mask_former_head, mask_former_model
