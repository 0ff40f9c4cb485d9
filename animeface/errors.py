"""The one exception family every animeface error belongs to."""


class AnimefaceError(Exception):
    """Base class: catch this to handle any animeface failure."""


class ImageError(AnimefaceError, ValueError):
    """An input could not be read as an image (empty, truncated, not an image, too big)."""


class InputError(AnimefaceError):
    """The inputs given hold nothing to work on: a folder that does not exist, or holds no pictures.
    The command line exits with 4 (no input was processed), as when every input failed."""


class ModelError(AnimefaceError):
    """A model file is missing, failed to download or failed its checksum."""


class CharacterNameError(AnimefaceError, ValueError):
    """A character name cannot be used: it must also be a safe folder name (see gallery.validate_name)."""


class GalleryError(AnimefaceError):
    """A saved gallery is missing, damaged, or does not fit the embedder in use."""


class BackboneMismatchError(GalleryError):
    """A gallery was made with another backbone, so its vectors cannot be compared."""
