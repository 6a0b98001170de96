from . import maskformer
