from . import mask2former_decoder, maskformer_decoder
