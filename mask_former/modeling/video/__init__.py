"""Video instance segmentation (Mask2Former-VIS): what inference over a video adds to the image model."""
from .inference import QueryTracks, associate_queries, binary_video_masks, top_pairs

__all__ = ["QueryTracks", "associate_queries", "binary_video_masks", "top_pairs"]
