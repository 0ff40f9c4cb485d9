"""animeface: find anime faces in pictures and say whose they are.

    import animeface
    animeface.enroll("Hatsune Miku", ["miku1.png", "miku_dir/"])
    for face in animeface.identify("scene.jpg"):
        print(face.box, face.label, face.score)

Importing the package loads nothing heavy: OpenCV, SciPy and the rest load with the first
name that needs them, and the network with the first embedding. TensorFlow loads only
once per network, to convert it.
"""

from importlib import import_module as _import_module

from .errors import (AnimefaceError, BackboneMismatchError, CharacterNameError, GalleryError, ImageError, InputError,
                     ModelError)

#: Public names defined in the stage modules, imported on first use.
_LAZY = {
    "Box": "detect", "Detector": "detect", "detect_faces": "detect",
    "load_image": "io",
    "EnrollReport": "recognizer", "Face": "recognizer", "Recognizer": "recognizer", "Calibration": "recognizer",
    "enroll": "recognizer", "identify": "recognizer",
    "read_index": "index",
}

__all__ = [
    "AnimefaceError", "BackboneMismatchError", "Box", "CharacterNameError", "Detector", "EnrollReport", "Face",
    "GalleryError", "ImageError", "InputError", "ModelError", "Recognizer", "Calibration", "detect_faces", "enroll",
    "identify", "load_image", "read_index",
]
__version__ = "0.3.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'animeface' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
