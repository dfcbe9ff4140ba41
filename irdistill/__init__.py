"""irdistill: train, distil and compare neural re-rankers and sparse retrievers."""
from irdistill.errors import IrdistillError

__version__ = "0.1.0"


def __getattr__(name):  # keep `import irdistill` light: torch loads on first use
    if name == "CrossEncoder":
        from irdistill.models.cross_encoder import CrossEncoder  # torch loads here, on first use

        return CrossEncoder
    raise AttributeError(name)


__all__ = ["CrossEncoder", "IrdistillError", "__version__"]
