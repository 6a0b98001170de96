from . import fpn, msdeformattn
