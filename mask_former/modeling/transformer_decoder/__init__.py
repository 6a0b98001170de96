from . import mask2former_decoder, maskformer_decoder, video_mask2former_decoder
