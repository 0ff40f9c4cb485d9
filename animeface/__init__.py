"""animeface: find anime faces in pictures and say whose they are.

    import animeface
    animeface.enroll("Hatsune Miku", ["miku1.png", "miku_dir/"])
    for face in animeface.identify("scene.jpg"):
        print(face.box, face.label, face.score)

TensorFlow loads on the first embedding, never at import.
"""

from .detect import Box, Detector, detect_faces
from .errors import AnimefaceError, BackboneMismatchError, CharacterNameError, GalleryError, ImageError, ModelError
from .io import load_image
from .recognizer import EnrollReport, Face, Recognizer, Thresholds, enroll, identify

__all__ = [
    "AnimefaceError", "BackboneMismatchError", "Box", "CharacterNameError", "Detector", "EnrollReport", "Face", "GalleryError",
    "ImageError", "ModelError", "Recognizer", "Thresholds", "detect_faces", "enroll", "identify", "load_image",
]
__version__ = "0.1.0"
