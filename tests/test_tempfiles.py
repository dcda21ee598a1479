"""Temp files stay bounded: removed by age (a fake clock, no sleeping), on shutdown, and after killed processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from blend import store, tempfiles

HOUR = 3600.0


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """BLEND_TMP_DIR on a fresh folder, and no process folder made yet."""
    root = tmp_path / "blend-tmp"
    monkeypatch.setenv("BLEND_TMP_DIR", str(root))
    monkeypatch.setattr(tempfiles, "_own", None)
    yield root
    tempfiles.remove_process_dir()


def touch(path, age_s: float, now: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (now - age_s, now - age_s))
    return path


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_sweep_removes_only_what_is_older_than_the_age(tmp_path):
    now = time.time()
    old = touch(tmp_path / "gradio" / "abc" / "upload.png", 2 * HOUR, now)
    young = touch(tmp_path / "gradio" / "def" / "upload.png", 10, now)
    os.utime(old.parent, (now - 2 * HOUR, now - 2 * HOUR))
    assert tempfiles.sweep(tmp_path, HOUR, now=now) == 1
    assert not old.exists() and not old.parent.exists()  # its folder, empty and old, went too
    assert young.exists()
    # an hour later by the fake clock the young file is old as well; the swept folder itself stays
    assert tempfiles.sweep(tmp_path, HOUR, now=now + HOUR) == 1 and not young.exists() and tmp_path.is_dir()


def test_janitor_sweeps_on_its_clock_and_its_extra_rules(tmp_root, tmp_path):
    clock = [time.time()]
    home = tmp_path / "home" / "users"
    gif = touch(tempfiles.process_dir() / "path-1.gif", 0, clock[0])
    killed_save = touch(home / "u" / "directions" / "mini.json.abc.tmp", 2 * store.SAVE_GRACE_S, clock[0])
    saving_now = touch(home / "u" / "directions" / "mini.json.def.tmp", 1, clock[0])
    saved = touch(home / "u" / "directions" / "mini.json", 10 * HOUR, clock[0])
    j = tempfiles.Janitor(max_age_s=HOUR, clock=lambda: clock[0],
                          extra=[lambda now: store.clean_orphans(home, store.SAVE_GRACE_S, now)])
    assert j.sweep_once() == 1
    assert not killed_save.exists() and saving_now.exists() and saved.exists() and gif.exists()
    clock[0] += HOUR + 1
    j.sweep_once()
    assert not gif.exists() and not saving_now.exists()
    assert saved.exists()  # only temp files of saves are swept in a user's folder, never the saves


def test_janitor_start_removes_dead_processes_folders_and_close_removes_its_own(tmp_root):
    pid = dead_pid()
    orphan = touch(tmp_root / f"run-{pid}-x1" / "path-3.gif", 0, time.time())
    other_live = touch(tmp_root / f"run-{os.getppid()}-x2" / "keep.json", 0, time.time())
    mine = tempfiles.process_dir()
    assert mine.parent == tmp_root and mine.name.startswith(f"run-{os.getpid()}-")
    j = tempfiles.Janitor(max_age_s=HOUR).start()
    try:
        assert not orphan.parent.exists()
        assert other_live.exists() and mine.is_dir()
    finally:
        j.close()
    assert not mine.exists() and not j._thread.is_alive()
    assert tempfiles.process_dir().is_dir()  # asked again after shutdown: a fresh folder, not an error


def test_janitor_thread_sweeps_by_itself_with_a_tiny_age(tmp_root):
    f = touch(tmp_root / "gradio" / "h" / "up.png", 0, time.time())
    j = tempfiles.Janitor(max_age_s=0.2).start()
    try:
        deadline = time.monotonic() + 20
        while f.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not f.exists()
    finally:
        j.close()


@pytest.mark.parametrize("value", [0, -5, "soon", float("nan"), float("inf")])
def test_a_bad_age_is_refused_by_name(value, monkeypatch):
    with pytest.raises(ValueError, match="temp_max_age_s"):
        tempfiles.Janitor(max_age_s=value)
    monkeypatch.setenv("BLEND_TEMP_MAX_AGE_S", str(value))
    with pytest.raises(ValueError, match="BLEND_TEMP_MAX_AGE_S"):
        tempfiles.max_age()


def test_the_age_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("BLEND_TEMP_MAX_AGE_S", "120")
    assert tempfiles.Janitor().max_age_s == 120.0
    assert tempfiles.gradio_delete_cache() == (30, 120)
    from blend.serve import ServeConfig
    assert ServeConfig.from_env().temp_max_age_s == 120.0


def test_the_service_cleans_at_start_and_on_shutdown(mini, tmp_root, tmp_path):
    """create_app: killed saves' temp files and dead processes' folders go at start; its own folder at shutdown."""
    from fastapi.testclient import TestClient

    from blend.serve import ServeConfig, create_app

    now = time.time()
    home = tmp_path / "home"
    killed_save = touch(home / "users" / "u1" / "directions" / "x.json.q.tmp", 2 * store.SAVE_GRACE_S, now)
    orphan = touch(tmp_root / f"run-{dead_pid()}-z" / "blend-history.json", 0, now)
    stale = touch(tmp_root / "gradio" / "k" / "old.png", 2 * HOUR, now)
    fresh = touch(tmp_root / "gradio" / "k2" / "new.png", 0, now)
    app = create_app(mini, config=ServeConfig(temp_max_age_s=HOUR), home=home)
    assert not killed_save.exists()
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert not orphan.parent.exists() and not stale.exists() and fresh.exists()
        own = tempfiles.process_dir()
        touch(own / "path-7.gif", 0, now)
    assert not own.exists()
