"""guie: frozen-CLIP universal image embedders, from training to a Kaggle submission."""
from guie.version import __version__

__all__ = ["__version__"]
