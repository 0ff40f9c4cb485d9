"""animeface: find anime faces in pictures and say whose they are.

    import animeface
    animeface.enroll("Hatsune Miku", ["miku1.png", "miku_dir/"])
    for face in animeface.identify("scene.jpg"):
        print(face.box, face.label, face.score)

TensorFlow loads on the first embedding, never at import.
"""

from .detect import Box, Detector, detect_faces
from .errors import AnimefaceError, BackboneMismatchError, GalleryError, ImageError, ModelError
from .io import load_image

__all__ = [
    "AnimefaceError", "BackboneMismatchError", "Box", "Detector", "GalleryError", "ImageError",
    "ModelError", "detect_faces", "load_image",
]
__version__ = "0.1.0"
