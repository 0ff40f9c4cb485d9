"""The command line: each verb, its exit statuses, its stderr lines and JSON, and a start-up that
never loads TensorFlow (issue 14: a command line that tells the truth)."""

import json
import os
import re
import selectors
import subprocess
import sys

import pytest

from animeface import Recognizer
from animeface.recognizer import WholePicture
from animeface.cli import EXIT_ERROR, EXIT_NOTHING_DONE, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main

from conftest import CASCADE, CHARACTERS, RANDOM_BACKBONE, ROOT, crops

#: A 256 px face crop whose only detection is a 45 px eye (the issue's example), and one with no detection.
EYE_ONLY = crops("gura", 2, 1)[0]
NO_DETECTION = crops("gura", 0, 1)[0]
#: Lines that TensorFlow, CUDA, absl or Python's warning machinery write, none of which may reach a user.
NOISE = re.compile(r"^[IWEF]\d{4} |oneDNN|[Cc]uda|cuInit|absl|[Tt]ensor[Ff]low|Traceback|\w+Warning\b|warnings\.warn", re.M)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_env(tmp_path, **extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), "ANIMEFACE_BACKBONE": RANDOM_BACKBONE,
            "ANIMEFACE_CASCADE": str(CASCADE), "ANIMEFACE_HOME": str(tmp_path / "home"),
            "ANIMEFACE_CACHE": str(tmp_path / "cache"), **extra}


@pytest.fixture
def random_backbone(monkeypatch):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", RANDOM_BACKBONE)


# -- start-up, help, version ------------------------------------------------------------


@pytest.mark.parametrize("code", [
    "import animeface",
    "from animeface.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
])
def test_import_and_help_do_not_load_tensorflow(code):
    probe = code + "\nimport sys\nprint('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_help_lists_verbs_exit_statuses_version_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("enroll", "identify", "detect", "list", "forget", "sort", "index", "evaluate"):
        assert verb in out
    assert "exit status" in out and "3    some inputs failed" in out and "4    no input was processed" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert re.fullmatch(r"animeface \d+\.\d+\.\d+\n", capsys.readouterr().out)
    for verb in ("enroll", "identify", "detect", "list", "forget", "sort", "index", "evaluate"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = capsys.readouterr().out
        assert "example" in text and f"animeface {verb}" in text.split("example", 1)[1], verb
        if verb in ("list", "forget"):
            assert "--backbone" not in text and "--cascade" not in text and "loading message" not in text
        else:
            assert "'imagenet' (the default" in text and ".h5" in text and "random-init[:SEED]" in text


# -- 1. failed inputs --------------------------------------------------------------------


def test_failed_inputs_get_a_line_each_an_error_field_and_an_exit_status(capsys, gallery_copy, tmp_path,
                                                                         random_backbone):
    missing, text = tmp_path / "nope" / "x.jpg", tmp_path / "notes.jpg"
    text.write_text("not a picture")
    good = crops("gura", 30, 1)[0]
    code, out, err = run(capsys, "identify", missing, text, good, "--gallery", gallery_copy, "--json", "-q")
    assert code == EXIT_SOME_FAILED
    failures = [line for line in err.splitlines() if line.startswith("animeface: failed:")]
    assert failures == [f"animeface: failed: {missing}: no such file or folder",
                        f"animeface: failed: {text}: not a readable image (unknown or damaged format)"]
    assert not NOISE.search(err)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["path"] for r in records] == [str(missing), str(text), str(good)]
    assert records[0]["error"].endswith("no such file or folder") and records[0]["faces"] == []
    assert records[2]["error"] is None and len(records[2]["faces"]) == 1

    code, out, err = run(capsys, "identify", missing, text, "--gallery", gallery_copy, "-q")
    assert code == EXIT_NOTHING_DONE and out == "" and err.count("animeface: failed:") == 2
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "identify", tmp_path / "empty", "--gallery", gallery_copy, "-q")
    assert code == EXIT_NOTHING_DONE and f"no pictures in {tmp_path / 'empty'}" in err


def test_detect_counts_failed_inputs_too(capsys, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    code, out, err = run(capsys, "detect", broken, crops("gura", 30, 1)[0], "--out", tmp_path / "out")
    assert code == EXIT_SOME_FAILED and err.count("animeface: failed:") == 1 and str(broken) in err
    assert run(capsys, "detect", broken, "--out", tmp_path / "out")[0] == EXIT_NOTHING_DONE


# -- 2, 7. quiet stderr, streamed results --------------------------------------------------


def test_identify_streams_each_result_and_stderr_holds_only_our_lines(tmp_path, gallery_copy):
    """The last input does not exist until the first result has been read from the pipe: it is
    named normally only if the first line came out before the last input was read (pictures
    are read a few ahead of the network, so there are more inputs than that)."""
    late = tmp_path / "late.jpg"
    argv = [sys.executable, "-m", "animeface", "identify", *crops("gura", 30, 6), *crops("calli", 30, 6), late,
            "--gallery", gallery_copy, "--json"]
    proc = subprocess.Popen(list(map(str, argv)), env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        with selectors.DefaultSelector() as sel:  # a guard against a hang, not a timing
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=300), "no result came out while the run went on"
        first = json.loads(proc.stdout.readline())
        late.symlink_to(crops("kiara", 30, 1)[0])
        rest, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    records = [first] + [json.loads(line) for line in rest.splitlines()]
    assert proc.returncode == EXIT_OK, err
    assert [r["path"] for r in records][-1] == str(late) and records[-1]["error"] is None
    assert err.count("animeface: loading the embedder") == 1
    assert "preparing the embedder, once" in err, "a fresh cache: TensorFlow converted the network in this run"
    assert all(line.startswith("animeface: ") for line in err.splitlines()), err
    assert not NOISE.search(err), err


# -- 3. face crops -------------------------------------------------------------------------


def test_a_face_crop_is_taken_whole_in_auto_mode_and_the_output_says_so(tmp_path):
    from animeface.io import load_image

    rec = Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, detector="cascade", progress=False)
    rgb = load_image(EYE_ONLY)
    (eye,), _ = rec.face_crops(rgb, "detect")
    assert max(eye.w, eye.h) < rgb.shape[0] / 2, "the cascade finds only the eye"
    (box,), _ = rec.face_crops(rgb, "auto")
    assert tuple(box) == (0, 0, rgb.shape[1], rgb.shape[0])
    report = rec.enroll("someone", [EYE_ONLY])
    assert report.used[0]["box"] == [0, 0, rgb.shape[1], rgb.shape[0]], "the eye was not enrolled as the face"
    found, _ = rec.face_crops(load_image(ROOT.parent / "shared/data/illustrations/set_b/test_2.jpg"), "auto")
    assert found and not any(isinstance(b, WholePicture) for b in found), "an illustration keeps its detections"


def test_identify_names_face_crops_with_the_default_options(capsys, gallery_copy, random_backbone):
    pictures = [EYE_ONLY, NO_DETECTION, *crops("calli", 30, 2)]
    code, out, err = run(capsys, "identify", *pictures, "--gallery", gallery_copy, "-q")
    lines = out.splitlines()
    assert code == EXIT_OK and len(lines) == len(pictures) and "no face" not in out
    assert f"{EYE_ONLY}: " in lines[0] and "whole picture, taken as a face crop" in lines[0]
    assert "whole picture, taken as a face crop" in lines[1]


# -- 4, 5. missing galleries, metadata verbs ----------------------------------------------------


@pytest.mark.parametrize("verb", [["identify", "x.jpg"], ["list"], ["forget", "gura"], ["sort", "src", "dst"],
                                  ["detect", "x.jpg", "--out", "out", "--names"], ["index", "src", "--out", "dst"]])
def test_a_missing_gallery_is_named_and_fails(capsys, tmp_path, verb, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    typo = tmp_path / "galery"
    code, out, err = run(capsys, *verb, "--gallery", typo)
    assert code == EXIT_ERROR and f"--gallery {typo}: no gallery there" in err and "Traceback" not in err
    assert not typo.exists() and not (tmp_path / "dst").exists()


@pytest.mark.parametrize("setting", ["random-init:3", "imagenet", "/nowhere/weights.h5"])
def test_list_and_forget_open_a_gallery_under_any_backbone_setting(capsys, gallery_copy, monkeypatch, setting):
    monkeypatch.setenv("ANIMEFACE_BACKBONE", setting)
    code, out, _ = run(capsys, "list", "--gallery", gallery_copy)
    assert code == EXIT_OK and [line.split("\t")[0] for line in out.splitlines()] == list(CHARACTERS)
    code, out, _ = run(capsys, "forget", "calli", "--gallery", gallery_copy)
    assert code == EXIT_OK and "forgot calli" in out
    rec = Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    assert "calli" not in rec.characters and len(rec.characters) == len(CHARACTERS) - 1, "still its own backbone's"


def test_a_backbone_mismatch_names_the_command_line_option(capsys, gallery_copy):
    code, out, err = run(capsys, "identify", EYE_ONLY, "--gallery", gallery_copy, "--backbone", "random-init:3")
    errors = [line for line in err.splitlines() if line.startswith("animeface: error:")]
    assert code == EXIT_ERROR and len(errors) == 1 and "--backbone" in errors[0] and "random-init:0" in errors[0]


# -- 8. unknown faces ------------------------------------------------------------------------


def test_an_unknown_face_shows_its_best_guess_and_the_threshold_that_refused_it(gallery_copy):
    from animeface.cli import face_text

    rec = Recognizer(gallery_copy, backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False,
                     stranger_refusal=0.999999)
    faces = [f for (f,) in rec.identify_batch(crops("fauna", 0, 10), faces="whole") if f.label is None]
    face = faces[0]
    name, probability = face.candidates[0]
    assert face.reason == (f"probability {probability:.3f} that it is {name} is below the threshold "
                           f"{rec.threshold:.3f}, set to refuse 100% of strangers")
    assert face_text(face) == f"unknown whole picture, taken as a face crop ({face.reason})", "the guess once"
    assert face.to_dict()["reason"] == face.reason


# -- enroll: summaries, bad names, progress ----------------------------------------------------


def test_re_enrolling_is_one_summary_line_and_verbose_lists_the_files(capsys, tmp_path, random_backbone):
    gallery, pictures = tmp_path / "g", crops("gura", 0, 4)
    code, out, _ = run(capsys, "enroll", "gura", *pictures, "--faces", "whole", "--gallery", gallery, "-q")
    assert code == EXIT_OK and "gura: 4 face(s) enrolled" in out
    code, out, _ = run(capsys, "enroll", "gura", *pictures, "--faces", "whole", "--gallery", gallery, "-q")
    assert code == EXIT_OK and out.splitlines()[0] == "gura: 0 face(s) enrolled; skipped 4 (already enrolled as gura)"
    code, out, _ = run(capsys, "enroll", "gura", *pictures, "--faces", "whole", "--gallery", gallery, "-q", "-v")
    assert sum(f"skipped {p}: already enrolled" in out for p in pictures) == 4


def test_a_bad_name_is_a_message_and_a_bad_subfolder_spares_the_others(capsys, tmp_path, random_backbone):
    code, out, err = run(capsys, "enroll", "a/b", crops("gura", 0, 1)[0], "--gallery", tmp_path / "g")
    assert code == EXIT_ERROR and err.startswith("animeface: error: character name 'a/b'") and "Traceback" not in err
    root = tmp_path / "people"
    for n, name in enumerate((*CHARACTERS[:2], "x" * 210)):
        (root / name).mkdir(parents=True)
        for p in crops(CHARACTERS[0], 2 * n, 2):
            (root / name / p.name).symlink_to(p)
    code, out, err = run(capsys, "enroll", "--folders", root, "--faces", "whole", "--gallery", tmp_path / "g", "-q")
    assert code == EXIT_SOME_FAILED and err.count("animeface: failed:") == 1 and "the limit is 200" in err
    assert sorted(Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE).characters) == sorted(CHARACTERS[:2])


def test_enroll_embeds_as_it_reads_so_its_progress_tracks_the_work(tmp_path):
    rec = Recognizer(tmp_path / "g", backbone=RANDOM_BACKBONE, cascade=CASCADE, progress=False)
    rec.embedder.batch_size = 2
    calls, embed = [], rec.embedder.embed
    rec.embedder.embed = lambda batch: calls.append(len(batch)) or embed(batch)
    rec.enroll("gura", crops("gura", 0, 5), faces="whole")
    assert calls == [2, 2, 1] and rec.characters == {"gura": 5}


def test_the_loading_line_is_said_once_and_quiet_drops_it(capsys, gallery_copy, random_backbone):
    _, _, err = run(capsys, "identify", EYE_ONLY, "--gallery", gallery_copy)
    assert err.count("animeface: loading the embedder") == 1
    _, _, err = run(capsys, "identify", EYE_ONLY, "--gallery", gallery_copy, "-q")
    assert "loading the embedder" not in err


# -- detect --------------------------------------------------------------------------------


def test_detect_keeps_subfolders_and_formats_and_never_overwrites(capsys, tmp_path, shared_data):
    pictures = sorted((shared_data / "illustrations" / "set_b").glob("*.jpg"))[:2]
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    from PIL import Image

    Image.open(pictures[0]).save(src / "sub" / "a.png")
    (src / "b.jpg").symlink_to(pictures[1])
    code, out, _ = run(capsys, "detect", src, "--out", tmp_path / "out")
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert code == EXIT_OK and written == ["b.jpg", "sub/a.png"]
    from animeface.io import load_image

    assert load_image(tmp_path / "out" / "sub" / "a.png").shape == load_image(pictures[0]).shape
    assert Image.open(tmp_path / "out" / "sub" / "a.png").format == "PNG"
    run(capsys, "detect", src / "b.jpg", "--out", tmp_path / "out")
    assert (tmp_path / "out" / "b-1.jpg").is_file(), "an existing annotated copy is never overwritten"


def test_detect_writes_undecodable_names_and_never_through_links(tmp_path, shared_data):
    """Breaks 10 and 11: cv2.imwrite crashed the process (exit 139) on a file name that is not UTF-8, and
    wrote through a dangling link, out of --out. Copies are now written as sort writes: a new file,
    never through a link (the name taken, the next one is used), never in a folder that leads out."""
    picture = sorted((shared_data / "illustrations" / "set_b").glob("*.jpg"))[0].read_bytes()
    src, out, elsewhere = tmp_path / "src", tmp_path / "out", tmp_path / "elsewhere"
    for folder in (src / "sub", out, elsewhere):
        folder.mkdir(parents=True)
    undecodable = os.fsencode(src) + b"/caf\xe9.jpg"
    with open(undecodable, "wb") as fh:
        fh.write(picture)
    (src / "a.jpg").write_bytes(picture)
    (src / "sub" / "b.jpg").write_bytes(picture)
    (out / "a.jpg").symlink_to(elsewhere / "planted.jpg")  # dangling
    (out / "sub").symlink_to(elsewhere)
    result = subprocess.run([sys.executable, "-m", "animeface", "detect", str(src), "--out", str(out), "-q"],
                            env=cli_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == EXIT_SOME_FAILED, result.stderr
    assert "Traceback" not in result.stderr and "sub/b.jpg" in result.stderr and "outside" in result.stderr
    assert os.listdir(elsewhere) == [], "nothing was written out of --out"
    assert sorted(os.listdir(os.fsencode(out))) == [b"a-1.jpg", b"a.jpg", b"caf\xe9.jpg", b"sub"]
    assert os.readlink(out / "a.jpg") == str(elsewhere / "planted.jpg")
    from animeface.io import load_image

    assert load_image(os.fsdecode(os.fsencode(out) + b"/caf\xe9.jpg")).shape == load_image(src / "a.jpg").shape


# -- sort --------------------------------------------------------------------------------------


def test_sort_with_an_empty_gallery_needs_no_backbone(capsys, tmp_path):
    gallery = tmp_path / "empty"
    Recognizer(gallery, cascade=CASCADE).save()  # the default backbone, which cannot be downloaded here
    src = tmp_path / "src"
    src.mkdir()
    for p in crops("gura", 30, 2):
        (src / p.name).write_bytes(p.read_bytes())
    code, out, err = run(capsys, "sort", src, tmp_path / "dst", "--faces", "auto", "--gallery", gallery, "-q")
    assert code == EXIT_OK and "the gallery" in err and "is empty" in err
    assert len(list((tmp_path / "dst" / "_unknown").iterdir())) == 2
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.h5")), "nothing downloaded"


def test_dry_run_lines_stand_alone_and_a_resumed_run_says_so(capsys, tmp_path, gallery_copy, random_backbone):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for p in crops("gura", 30, 2):
        (src / p.name).write_bytes(p.read_bytes())
    code, out, _ = run(capsys, "sort", src, dst, "--dry-run", "--gallery", gallery_copy)
    actions = out.split("dry run, nothing changed:")[0].splitlines()
    assert code == EXIT_OK and len(actions) == 2 and all(line.startswith("copy ") for line in actions)
    (dst / ".animeface").mkdir(parents=True)  # a first run that failed before it placed anything
    (dst / ".animeface" / "journal-20240101T000000.000000.jsonl").write_text(json.dumps(
        {"op": "run", "src": str(src.resolve()), "dst": str(dst.resolve()), "move": False, "faces": "detect",
         "at": "2024-01-01T00:00:00"}) + "\n")
    code, out, _ = run(capsys, "sort", src, dst, "--gallery", gallery_copy, "-q")
    assert code == EXIT_OK and "carried on the interrupted run started 2024-01-01T00:00:00: 0 done" in out


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_plots_without_matplotlib_fails_before_evaluating(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["evaluate", str(tmp_path), "--plots", str(tmp_path / "plots")])
    out, err = capsys.readouterr()
    assert code == EXIT_ERROR and "needs matplotlib" in err and "nothing was run" in err and out == ""


def test_a_command_line_missing_its_folders_is_a_usage_error(capsys, tmp_path):
    code, out, err = run(capsys, "sort", tmp_path)
    assert code == EXIT_USAGE and "give SRC and DST" in err and out == ""


def test_output_cut_short_by_a_closed_pipe_ends_quietly(tmp_path, random_backbone):
    """`animeface identify ... | head -1` stops without an error message."""
    script = (f"animeface identify {' '.join(str(p) for p in crops('gura', 0, 12))} --gallery {tmp_path / 'g'} "
              "--faces whole -q | head -1")
    subprocess.run([sys.executable, "-m", "animeface.cli", "enroll", "gura", *map(str, crops("gura", 20, 3)),
                    "--faces", "whole", "--gallery", str(tmp_path / "g"), "-q"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = subprocess.run(["bash", "-o", "pipefail", "-c", script.replace("animeface ", f"{sys.executable} -m animeface.cli ", 1)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert len(out.stdout.splitlines()) == 1 and "Broken pipe" not in out.stderr and "Traceback" not in out.stderr


# -- the whole round ----------------------------------------------------------------------------


def test_enroll_list_identify_forget(capsys, tmp_path, random_backbone):
    gallery = tmp_path / "g"
    code, out, _ = run(capsys, "enroll", "gura", *crops("gura", 0, 4), "--faces", "whole", "--gallery", gallery, "-q")
    assert code == EXIT_OK and "gura: 4 face(s) enrolled" in out
    run(capsys, "enroll", "calli", *crops("calli", 0, 4), "--faces", "whole", "--gallery", gallery, "-q")
    code, out, _ = run(capsys, "list", "--gallery", gallery)
    assert out.split("\n")[:2] == ["gura\t4", "calli\t4"]
    probe = crops("gura", 10, 1)[0]
    code, out, _ = run(capsys, "identify", probe, "--faces", "whole", "--json", "--gallery", gallery, "-q")
    record = json.loads(out.strip().splitlines()[-1])
    assert code == EXIT_OK and record["path"] == str(probe)
    assert len(record["faces"]) == 1 and record["faces"][0]["candidates"][0][0] in ("gura", "calli")
    code, out, _ = run(capsys, "forget", "calli", "--gallery", gallery)
    assert code == EXIT_OK and "forgot calli" in out
    code, out, err = run(capsys, "forget", "calli", "--gallery", gallery)
    assert code == EXIT_ERROR and "not enrolled" in err
    code, out, _ = run(capsys, "list", "--gallery", gallery)
    assert out.strip() == "gura\t4"


def test_a_face_enrolled_under_the_wrong_name_is_forgotten_alone_and_enrolled_again(capsys, tmp_path, random_backbone):
    gallery, pictures = tmp_path / "g", crops("gura", 0, 4)
    run(capsys, "enroll", "gura", *pictures, "--faces", "whole", "--gallery", gallery, "-q")
    code, out, _ = run(capsys, "enroll", "Gawr Gura", pictures[0], "--faces", "whole", "--gallery", gallery)
    assert code == EXIT_OK and "skipped 1 (its face is enrolled as gura)" in out
    code, out, _ = run(capsys, "forget", "gura", pictures[0], "--gallery", gallery)
    assert code == EXIT_OK and out.strip() == "forgot 1 face(s) of gura"
    code, out, err = run(capsys, "forget", "gura", pictures[0], "--gallery", gallery)
    assert code == EXIT_NOTHING_DONE and f"{pictures[0]}: not enrolled as gura" in err
    folder = tmp_path / "wrong"
    folder.mkdir()
    (folder / "x.jpg").symlink_to(pictures[1])
    code, out, _ = run(capsys, "forget", "gura", folder, "--gallery", gallery)
    assert code == EXIT_OK and out.strip() == "forgot 1 face(s) of gura"
    run(capsys, "enroll", "Gawr Gura", pictures[0], "--faces", "whole", "--gallery", gallery, "-q")
    code, out, err = run(capsys, "forget", "gura", pictures[2], pictures[0], "--json", "--gallery", gallery)
    assert code == EXIT_SOME_FAILED and f"{pictures[0]}: not enrolled as gura (enrolled as Gawr Gura)" in err
    report = json.loads(out)
    assert report["faces"] == 1 and report["pictures"] == [str(pictures[2])]
    assert report["not_enrolled"] == [{"path": str(pictures[0]), "enrolled_as": ["Gawr Gura"]}]
    code, out, _ = run(capsys, "list", "--gallery", gallery)
    assert out.split("\n")[:2] == ["gura\t1", "Gawr Gura\t1"]


def test_enroll_folders_names_characters_after_subfolders(capsys, tmp_path, random_backbone):
    root = tmp_path / "people"
    for name in CHARACTERS[:2]:
        (root / name).mkdir(parents=True)
        for p in crops(name, 0, 3):
            (root / name / p.name).symlink_to(p)
    code, out, _ = run(capsys, "enroll", "--folders", root, "--faces", "whole", "-q")
    assert code == EXIT_OK
    code, out, _ = run(capsys, "list")
    first, second = sorted(CHARACTERS[:2])
    assert out.split() == [first, "3", second, "3"]


# -- issue 23: one walker, one rule, the same flags and exit codes for every command --------------


@pytest.fixture
def disguised(tmp_path):
    """Real JPEG face crops named as a download leaves them (no suffix, .download), beside a note, an
    empty file, and sort's own state folder (never walked)."""
    folder = tmp_path / "downloads"
    (folder / "sub").mkdir(parents=True)
    (folder / "x_noext").write_bytes(crops("gura", 30, 1)[0].read_bytes())
    (folder / "sub" / "x.download").write_bytes(crops("calli", 30, 1)[0].read_bytes())
    (folder / "notes.txt").write_text("my notes\n")
    (folder / ".gitkeep").write_bytes(b"")
    (folder / ".animeface").mkdir()
    (folder / ".animeface" / "thumb.jpg").write_bytes(crops("kiara", 30, 1)[0].read_bytes())
    return folder


def test_every_command_takes_pictures_by_content_whatever_their_names(capsys, disguised, gallery_copy, tmp_path,
                                                                     random_backbone):
    pictures = {str(disguised / "x_noext"), str(disguised / "sub" / "x.download")}
    code, out, err = run(capsys, "identify", disguised, "--faces", "whole", "--json", "--gallery", gallery_copy, "-q")
    assert code == EXIT_OK and {json.loads(line)["path"] for line in out.splitlines()} == pictures, err
    code, out, err = run(capsys, "enroll", "someone", disguised, "--faces", "whole", "--gallery", gallery_copy, "-q")
    assert code == EXIT_OK and "someone: 2 face(s) enrolled" in out and "unreadable" not in out, err
    code, out, err = run(capsys, "cluster", disguised, "--faces", "whole", "--json", "--similarity", "0.5",
                         "--gallery", tmp_path / "none", "-q")
    found = json.loads(out.splitlines()[-1])
    sources = {f["source"] for part in ("ungrouped", "named") for f in found[part]}
    sources |= {f["source"] for group in found["clusters"] for f in group["faces"]}
    assert code == EXIT_OK and sources == pictures, err
    code, out, err = run(capsys, "detect", disguised, "--out", tmp_path / "checked", "--detector", "cascade", "-q")
    assert code == EXIT_OK and sorted(p.name for p in (tmp_path / "checked").rglob("*") if p.is_file()) == \
        ["x.png", "x_noext.png"], err
    code, out, err = run(capsys, "sort", disguised, tmp_path / "sorted", "--faces", "auto", "--gallery", gallery_copy,
                         "-q")
    placed = sorted(p.name for p in (tmp_path / "sorted").rglob("*") if p.is_file() and ".animeface" not in p.parts)
    assert placed == ["x.download", "x_noext"], err
    assert code == EXIT_SOME_FAILED and "notes.txt: not an image" in out, "sort lists what it leaves in place"


@pytest.mark.parametrize("verb", [["identify", "TYPO"], ["enroll", "Someone", "TYPO"], ["cluster", "TYPO"],
                                  ["detect", "TYPO", "--out", "out"], ["sort", "TYPO", "out"], ["evaluate", "TYPO"],
                                  ["train", "TYPO", "--out", "out"], ["enroll", "--folders", "TYPO"]])
def test_a_mistyped_path_is_no_such_file_or_folder_with_one_exit_status_and_nothing_made(capsys, tmp_path, verb,
                                                                                          gallery_copy, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANIMEFACE_HOME", str(gallery_copy))
    typo = tmp_path / "missing_folder"
    argv = [str(typo) if word == "TYPO" else word for word in verb]
    code, out, err = run(capsys, *argv, "--backbone", RANDOM_BACKBONE, "-q")
    assert code == EXIT_NOTHING_DONE, err
    assert re.search(rf"animeface: failed: .*{typo}: no such (file or )?folder", err) and "unreadable" not in out
    assert sorted(os.listdir(tmp_path)) == sorted({gallery_copy.name, "cache"} & set(os.listdir(tmp_path))), \
        "nothing was made"


def test_enrolling_from_a_missing_folder_makes_no_gallery_and_loads_nothing(capsys, tmp_path):
    code, out, err = run(capsys, "enroll", "Typo", tmp_path / "missing_folder", "--gallery", tmp_path / "g")
    assert code == EXIT_NOTHING_DONE and "no such file or folder" in err and "loading" not in err
    assert not (tmp_path / "g").exists()


def test_sorting_an_empty_folder_says_no_pictures_and_makes_nothing(capsys, tmp_path, gallery_copy):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("not a picture")
    for gallery in ([], ["--gallery", gallery_copy]):  # with no gallery (grouping) and with one
        code, out, err = run(capsys, "sort", tmp_path / "empty", tmp_path / "dst", *gallery, "--backbone", RANDOM_BACKBONE)
        assert code == EXIT_NOTHING_DONE and f"no pictures in {tmp_path / 'empty'}" in err and "loading" not in err, err
        assert not (tmp_path / "dst").exists()


#: Each command with the least it needs to parse.
COMMANDS = {"enroll": ["N", "p"], "identify": ["p"], "cluster": ["p"], "detect": ["p"], "list": [], "forget": ["N"],
            "sort": ["a", "b"], "evaluate": ["r"], "train": ["r", "--out", "o"], "serve": []}


@pytest.mark.parametrize("verb", COMMANDS)
def test_every_command_takes_the_same_output_flags(verb):
    """-q everywhere; --json on every command that lists, names, or reports (serve only serves);
    -v where there is more to list."""
    from animeface.cli import build_parser

    parser = build_parser()
    assert parser.parse_args([verb, *COMMANDS[verb], "-q"]).quiet
    assert parser.parse_args([verb, *COMMANDS[verb], "--quiet"]).quiet
    if verb != "serve":
        assert parser.parse_args([verb, *COMMANDS[verb], "--json"]).json
    if verb in ("enroll", "cluster", "sort"):
        assert parser.parse_args([verb, *COMMANDS[verb], "-v"]).verbose


def test_list_and_forget_quietly_and_as_json(capsys, gallery_copy):
    code, out, _ = run(capsys, "list", "-q", "--gallery", gallery_copy)
    assert code == EXIT_OK and out.split() == list(CHARACTERS)
    code, out, _ = run(capsys, "list", "--json", "--gallery", gallery_copy)
    listed = json.loads(out)
    assert list(listed["characters"]) == list(CHARACTERS) and all(n > 0 for n in listed["characters"].values())
    code, out, _ = run(capsys, "forget", "gura", "-q", "--gallery", gallery_copy)
    assert code == EXIT_OK and out == ""
    code, out, _ = run(capsys, "forget", "calli", "--json", "--gallery", gallery_copy)
    assert json.loads(out) == {"forgot": "calli", "faces": listed["characters"]["calli"], "gallery": str(gallery_copy)}
    assert run(capsys, "list", "-q", "--gallery", gallery_copy)[1].split() == list(CHARACTERS[2:])


def test_detect_prints_the_boxes_without_writing_copies(capsys, tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scene, broken = shared_data / "illustrations" / "set_b" / "test_1.jpg", tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG broken")
    code, out, err = run(capsys, "detect", scene, broken, "--json", "--detector", "cascade", "-q")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == EXIT_SOME_FAILED and [r["path"] for r in records] == [str(scene), str(broken)]
    from animeface.detect import Detector

    boxes = Detector("cascade").detect(scene)
    assert [f["box"] for f in records[0]["faces"]] == [list(b) for b in boxes] and records[0]["out"] is None
    assert records[1]["error"] and records[1]["faces"] == []
    assert os.listdir(tmp_path) == ["broken.png"], "nothing written without --out"
    code, out, err = run(capsys, "detect", scene, "--detector", "cascade")
    assert code == EXIT_USAGE and "--json" in err


def test_sort_summary_as_json_and_verbose_actions(capsys, tmp_path, gallery_copy, random_backbone):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for p in crops("gura", 30, 2):
        (src / p.name).write_bytes(p.read_bytes())
    code, out, _ = run(capsys, "sort", src, dst, "--gallery", gallery_copy, "--faces", "auto", "-v", "--json", "-q")
    lines = out.splitlines()
    summary = json.loads(lines[-1])
    assert code == EXIT_OK and summary["files"] == 2 and summary["copied"] == 2 and summary["left"] == []
    assert sum(summary["folders"].values()) == 2 and summary["report"] == str(dst.resolve() / ".animeface" / "report.html")
    assert len([line for line in lines[:-1] if line.startswith("copy ")]) == 2, "-v: each action"
    code, out, _ = run(capsys, "sort", "--undo", dst, "--json")
    assert code == EXIT_OK and json.loads(out) == {"restored": 0, "removed": 2, "dry_run": False, "kept": []}
