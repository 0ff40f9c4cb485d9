"""The one image loader: every input kind, every awkward format, every bad file."""

import warnings

import numpy as np
import pytest
from PIL import Image

import animeface
from animeface.io import load_image

from conftest import CASCADE, RANDOM_BACKBONE, SHARED, crops


def save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_path_bytes_array_and_pil_give_the_same_pixels(tmp_path):
    rgb = (np.arange(40 * 30 * 3) % 251).astype(np.uint8).reshape(40, 30, 3)
    path = save(Image.fromarray(rgb), tmp_path / "a.png")
    for src in (path, str(path), path.read_bytes(), rgb, Image.fromarray(rgb)):
        out = load_image(src)
        assert out.dtype == np.uint8 and out.shape == (40, 30, 3)
        assert np.array_equal(out, rgb)


def test_decodes_by_content_not_extension(shared_data, tmp_path):
    png = save(Image.new("RGB", (8, 8), (10, 200, 30)), tmp_path / "really_a_png.jpg", format="PNG")
    assert load_image(png)[0, 0].tolist() == [10, 200, 30]
    # real mislabelled files from the shared data: JPEGs named .png among the 64 px crops
    named_png = [p for p in (shared_data / "faces" / "unlabeled64").iterdir() if p.read_bytes()[:2] == b"\xff\xd8"]
    assert named_png, "the shared data should hold JPEGs named .png"
    assert load_image(named_png[0]).shape[2] == 3


def test_grayscale_palette_cmyk_become_rgb(tmp_path):
    gray = load_image(save(Image.new("L", (5, 4), 77), tmp_path / "g.png"))
    assert gray.shape == (4, 5, 3) and (gray == 77).all()
    pal = Image.new("P", (4, 4))
    pal.putpalette([255, 0, 0] + [0] * 765)
    assert load_image(save(pal, tmp_path / "p.png"))[0, 0].tolist() == [255, 0, 0]
    cmyk = load_image(save(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), tmp_path / "c.jpg"))
    r, g, b = cmyk[0, 0].tolist()
    assert r > 200 and g < 60 and b < 60


def test_alpha_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = load_image(save(rgba, tmp_path / "a.png"))
    assert out[0, 0].tolist() == [0, 0, 255]
    assert out[1, 1].tolist() == [255, 255, 255]
    arr = np.zeros((2, 2, 4), np.uint8)  # fully transparent array input
    assert (load_image(arr) == 255).all()


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    out = load_image(save(img, tmp_path / "deep.png"))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_animated_gif_gives_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    r, g, b = load_image(path)[0, 0].tolist()
    assert r > 200 and g < 50


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    out = load_image(save(img, tmp_path / "rot.jpg", exif=exif))
    assert out.shape[:2] == (40, 20)


@pytest.mark.parametrize("make, why", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"hello, this is text\n"), "not a readable image"),
    (lambda p: p.write_bytes((SHARED / "illustrations" / "set_b" / "test_1.jpg").read_bytes()[:2000]),
     "not a readable image"),
])
def test_bad_files_raise_image_error_naming_the_file(tmp_path, make, why):
    path = tmp_path / "bad file.png"
    make(path)
    with pytest.raises(animeface.ImageError) as err:
        load_image(path)
    assert str(path) in str(err.value) and why in str(err.value)


def test_missing_file_and_empty_bytes(tmp_path):
    with pytest.raises(animeface.ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(animeface.ImageError, match="empty"):
        load_image(b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (300, 300)), tmp_path / "big.png")
    monkeypatch.setenv("ANIMEFACE_MAX_PIXELS", "50000")
    with pytest.raises(animeface.ImageError, match="over the limit") as err:
        load_image(path)
    assert str(path) in str(err.value)


def test_identify_batch_warns_about_a_bad_file_and_carries_on(tmp_path, shared_data):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    good = shared_data / "illustrations" / "set_b" / "test_1.jpg"
    rec = animeface.Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = rec.identify_batch([good, bad, good])
    messages = [str(w.message) for w in caught if str(bad) in str(w.message)]
    assert len(messages) == 1
    assert len(results) == 3 and results[1] == []
    assert len(results[0]) >= 1 and len(results[0]) == len(results[2])


# -- issue 23: settings ------------------------------------------------------------------------


@pytest.mark.parametrize("side", [(10000, 8500), (30000, 30000)])  # 85 and 900 megapixels, a few kilobytes each
def test_one_pixel_limit_message_whichever_check_refuses(side):
    """Pillow refuses a picture past twice its own limit before the size can be checked; the
    message quotes the limit in force all the same."""
    from io import BytesIO

    buffer = BytesIO()
    Image.new("1", side).save(buffer, "PNG")
    with pytest.raises(animeface.ImageError, match=r"^big\.png: .* is over the limit of 80000000 pixels; set "
                                                   "ANIMEFACE_MAX_PIXELS"):
        animeface.load_image(buffer.getvalue(), name="big.png")


@pytest.mark.parametrize("setting", ["lots", "-5", "0", "1.5e6"])
def test_a_bad_pixel_limit_is_one_clear_error(capsys, monkeypatch, gallery_copy, setting):
    from animeface.cli import EXIT_ERROR, main

    monkeypatch.setenv("ANIMEFACE_MAX_PIXELS", setting)
    assert main(["list", "--gallery", str(gallery_copy)]) == EXIT_ERROR
    out, err = capsys.readouterr()
    assert err == (f"animeface: error: ANIMEFACE_MAX_PIXELS={setting!r}: not a whole number of pixels above 0 "
                   "(such as 80000000, the default); set it to one, or unset it\n") and out == ""
    with pytest.raises(animeface.AnimefaceError, match="ANIMEFACE_MAX_PIXELS"):
        animeface.load_image(np.zeros((4, 4, 3), np.uint8))


def test_help_lists_every_setting(capsys):
    from animeface.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in ("ANIMEFACE_HOME", "ANIMEFACE_BACKBONE", "ANIMEFACE_DETECTOR", "ANIMEFACE_CASCADE", "ANIMEFACE_CACHE",
                 "ANIMEFACE_MAX_PIXELS"):
        assert name in out


def test_a_mistyped_backbone_path_is_no_such_file(capsys, tmp_path):
    from animeface.cli import EXIT_ERROR, main

    typo = tmp_path / "inception_v3_weigths.h5"
    code = main(["cluster", str(crops("gura", 0, 1)[0]), "--backbone", str(typo), "-q"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and f"backbone {typo}: no such file" in err and "mixed8" in err
