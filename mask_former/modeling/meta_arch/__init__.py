from . import maskformer, video_maskformer
