"""`vidgen data prepare` never deletes what it did not create (issue 18, the data-loss cases):
the output may not be, contain or lie inside an input; --overwrite replaces vidgen datasets
only; one run at a time writes a dataset (a PID lock); a parked old dataset survives other
runs; I/O errors say what was kept; workers die with their parent."""

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import child_pids

from vidgen.cli import main
from vidgen.data.prepare import PrepareConfig, load_manifest, prepare
from vidgen.data.synthetic import make_drive
from vidgen.errors import DataError
from vidgen.lockfile import PathLock, lock_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("videos")
    make_drive(out, seed=3, frames=24, size=(36, 48), videos=3, fps=10)
    return out


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vidgen: error: ") and "Traceback" not in err, err
    return lines[0]


def _complete(ds: Path) -> int:
    """Every clip of the manifest has a shard with its frames at every resolution."""
    m = load_manifest(ds)
    for res in m["resolutions"]:
        for c in m["clips"]:
            with zipfile.ZipFile(ds / res / f"{c['id']}.zip") as z:
                assert len(z.namelist()) == c["num_frames"]
    return len(m["clips"])


def _prepare_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "vidgen", "data", "prepare", *map(str, args)]


def test_out_equal_to_inside_or_around_an_input_keeps_the_sources(tmp_path, videos, capsys):
    src = tmp_path / "src"
    shutil.copytree(videos, src)
    before = _digest(src)
    for out in (src, src / "ds", tmp_path):
        assert main(["data", "prepare", str(src), "--out", str(out), "--overwrite",
                     "--resolution", "16x16"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "input" in line and str(src) in line
    # a single file as the input, the output its folder
    assert main(["data", "prepare", str(src / "drive_000.mp4"), "--out", str(src), "--overwrite"]) == 2
    _one_error_line(capsys.readouterr().err)
    assert _digest(src) == before and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path, videos, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my thesis")
    (folder / "sub").mkdir()
    (folder / "sub" / "photo.jpg").write_bytes(b"\xff\xd8 not really")
    before = _digest(folder)
    assert main(["data", "prepare", str(videos), "--out", str(folder), "--overwrite"]) == 2
    assert "not a vidgen dataset" in _one_error_line(capsys.readouterr().err)
    assert _digest(folder) == before
    # a dataset that the user added files to is not replaced either
    ds = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(videos / "drive_000.mp4")], out=str(ds), resolutions=[(16, 16)]),
            log=lambda m: None)
    (ds / "16x16" / "my_notes.txt").write_text("keep me")
    assert main(["data", "prepare", str(videos), "--out", str(ds), "--overwrite", "--resolution", "16x16"]) == 2
    assert "16x16/my_notes.txt" in _one_error_line(capsys.readouterr().err)
    assert (ds / "16x16" / "my_notes.txt").read_text() == "keep me" and _complete(ds) == 1
    # a dataset alone is replaced; an empty folder is used without --overwrite
    (ds / "16x16" / "my_notes.txt").unlink()
    assert main(["data", "prepare", str(videos), "--out", str(ds), "--overwrite", "--resolution", "16x16"]) == 0
    assert _complete(ds) == 3
    (tmp_path / "empty").mkdir()
    assert main(["data", "prepare", str(videos), "--out", str(tmp_path / "empty"), "--resolution", "16x16"]) == 0
    assert _complete(tmp_path / "empty") == 3
    capsys.readouterr()


# A prepare that, after its first shard, waits until the file named by $GO exists: a run that
# is still writing when the second one starts, however fast the machine.
_WAIT_AFTER_FIRST_SHARD = """
import os, sys, time, zipfile
real = zipfile.ZipFile.close
def close(self):
    real(self)
    if self.mode == "w":
        print("writing", flush=True)
        while not os.path.exists(os.environ["GO"]):
            time.sleep(0.02)
zipfile.ZipFile.close = close
from vidgen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_concurrent_prepares_never_publish_missing_shards(tmp_path, videos):
    ds, go = tmp_path / "ds", tmp_path / "go"
    prepare(PrepareConfig(inputs=[str(videos / "drive_000.mp4")], out=str(ds), resolutions=[(16, 16)]),
            log=lambda m: None)
    args = ["data", "prepare", str(videos), "--out", str(ds), "--overwrite", "--resolution", "16x16",
            "--resolution", "24x32"]
    a = subprocess.Popen([sys.executable, "-c", _WAIT_AFTER_FIRST_SHARD, *args], cwd=ROOT,
                         env={**os.environ, "GO": str(go)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert a.stdout.readline().strip() == "writing"
        b = subprocess.run(_prepare_cmd(videos, "--out", ds, "--overwrite", "--resolution", "16x16"), cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    finally:
        go.touch()
    a_out, a_err = a.communicate(timeout=120)
    assert a.returncode == 0, a_err
    assert b.returncode == 2
    line = _one_error_line(b.stderr)
    assert "another `vidgen data prepare`" in line and f"PID {a.pid}" in line
    assert _complete(ds) == 3 and load_manifest(ds)["resolutions"] == ["16x16", "24x32"]
    assert not lock_path(ds).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds", "go"]


def test_lock_held_by_a_live_process_and_stale_lock(tmp_path, videos, capsys):
    ds = tmp_path / "ds"
    with PathLock(ds, "test holder"):
        assert main(["data", "prepare", str(videos), "--out", str(ds)]) == 2
        assert f"PID {os.getpid()}" in _one_error_line(capsys.readouterr().err)
    assert not ds.exists() and not lock_path(ds).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(ds).write_text(f"{dead.pid} somehost\n")  # left by a process killed while it held it
    logs = []
    prepare(PrepareConfig(inputs=[str(videos)], out=str(ds), resolutions=[(16, 16)]), log=logs.append)
    assert any(f"stale lock of PID {dead.pid}" in m for m in logs) and _complete(ds) == 3
    assert not lock_path(ds).exists()


def _dataset_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_parked_old_dataset_is_never_deleted_by_another_run(tmp_path, videos):
    ds = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(videos / "drive_001.mp4")], out=str(ds), resolutions=[(16, 16)]),
            log=lambda m: None)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        parked = _dataset_copy(ds, tmp_path / f".ds.tmp-{live.pid}-0123abcd.old")
        cfg = PrepareConfig(inputs=[str(videos)], out=str(ds), resolutions=[(16, 16)], overwrite=True)
        prepare(cfg, log=lambda m: None)
        assert parked.is_dir() and _complete(parked) == 1  # its owner is alive: not touched
    finally:
        live.kill()
        live.wait()
    prepare(cfg, log=lambda m: None)  # its owner is gone and the new dataset is in place: removed
    assert not parked.exists() and _complete(ds) == 3
    # the owner died between parking the old dataset and publishing the new one: put back
    parked = tmp_path / f".ds.tmp-{live.pid}-89abcdef.old"
    os.replace(ds, parked)
    (tmp_path / f".ds.tmp-{live.pid}-89abcdef").mkdir()  # its unfinished build
    logs = []
    with pytest.raises(DataError, match="already exists"):
        prepare(PrepareConfig(inputs=[str(videos)], out=str(ds), resolutions=[(16, 16)]), log=logs.append)
    assert any("put back" in m for m in logs) and _complete(ds) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


# A prepare that stops for a while right after parking the old dataset (between the two
# renames of the publish), as a slow disk or a descheduled process would.
_PAUSE_AFTER_PARKING = """
import os, sys, time
real = os.replace
def replace(a, b):
    real(a, b)
    if str(b).endswith(".old"):
        print("parked", flush=True)
        time.sleep(float(os.environ["PAUSE"]))
os.replace = replace
from vidgen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_window_with_the_old_dataset_parked(tmp_path, videos):
    ds = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(videos / "drive_002.mp4")], out=str(ds), resolutions=[(16, 16)]),
            log=lambda m: None)
    old = _digest(ds)
    env = {**os.environ, "PAUSE": "60"}
    args = ["data", "prepare", str(videos), "--out", str(ds), "--overwrite", "--resolution", "16x16"]
    a = subprocess.Popen([sys.executable, "-c", _PAUSE_AFTER_PARKING, *args], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert a.stdout.readline().strip() == "parked"
        assert not ds.exists()
        parked = [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
        assert len(parked) == 1 and f".tmp-{a.pid}-" in parked[0].name
        b = subprocess.run(_prepare_cmd(videos, "--out", ds, "--overwrite", "--resolution", "16x16"),
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert b.returncode == 2 and "is writing it now" in _one_error_line(b.stderr)
        assert parked[0].is_dir() and _digest(parked[0]) == old
    finally:
        a.kill()  # dies inside the window
        a.wait()
    # the next run takes the stale lock over and puts the old dataset back before anything else
    c = subprocess.run(_prepare_cmd(videos / "drive_000.mp4", "--out", ds, "--resolution", "16x16"),
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert c.returncode == 2 and "already exists" in c.stderr.splitlines()[-1]
    assert "stale lock" in c.stderr and "put back" in c.stderr
    assert _digest(ds) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def _fail_with(monkeypatch, target: str, code: int, filename=None):
    def boom(*args, **kwargs):
        raise OSError(code, os.strerror(code), filename if filename is not None else str(args[0]))
    monkeypatch.setattr(target, boom)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_io_errors_name_the_path_and_what_was_kept(tmp_path, videos, monkeypatch, capsys, code):
    ds = tmp_path / "ds"
    prepare(PrepareConfig(inputs=[str(videos / "drive_000.mp4")], out=str(ds), resolutions=[(16, 16)]),
            log=lambda m: None)
    old = _digest(ds)
    args = ["data", "prepare", str(videos), "--out", str(ds), "--overwrite", "--resolution", "16x16"]
    with monkeypatch.context() as m:  # the disk fills up (or turns read-only) while shards are written
        m.setattr(zipfile.ZipFile, "writestr", lambda self, *a, **k: (_ for _ in ()).throw(
            OSError(code, os.strerror(code))))
        assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert os.strerror(code) in line and f"{ds.name}.tmp-" in line and ".zip" in line
    assert f"the old dataset {ds} is kept unchanged" in line
    with monkeypatch.context() as m:  # ... while the manifest is written
        _fail_with(m, "vidgen.data.prepare.write_json", code)
        assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert os.strerror(code) in line and ".json" in line and "kept unchanged" in line
    assert _digest(ds) == old and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    # the destination folder itself is not writable: nothing is read or created
    with monkeypatch.context() as m:
        real_open = os.open
        m.setattr("vidgen.lockfile.os.open", lambda p, *a, **k: (_ for _ in ()).throw(
            OSError(code, os.strerror(code), str(p))) if str(p).endswith(".lock") else real_open(p, *a, **k))
        assert main(["data", "prepare", str(videos), "--out", str(tmp_path / "new")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert os.strerror(code) in line and ".new.lock" in line and "nothing was written" in line
    assert not (tmp_path / "new").exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_parent(tmp_path, videos):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for k in range(8):
        os.link(videos / f"drive_{k % 3:03d}.mp4", inputs / f"v{k}.mp4")
    res = [a for r in ("16x16", "24x32", "32x48", "36x48") for a in ("--resolution", r)]
    parent = subprocess.Popen(_prepare_cmd(inputs, "--out", tmp_path / "ds", "--workers", "2", *res),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.time() + 60
    while time.time() < deadline and parent.poll() is None:
        workers = {k for k in child_pids(parent.pid)
                   if "spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")}
        if len(workers) == 2:
            break
        time.sleep(0.05)
    assert len(workers) == 2, "the workers did not start"
    family = workers | set(child_pids(parent.pid))
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in family):
        time.sleep(0.1)
    assert not [p for p in family if _alive(p)], "orphaned worker processes"
    assert not (tmp_path / "ds").exists()
