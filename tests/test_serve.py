"""A server fit to be reached from another machine: logins, the exposure warning, files
outside Gradio's upload folder refused, heavy views refused when busy."""

from __future__ import annotations

import threading

import gradio as gr
import httpx
import pytest

from transferkit.testing import free_port

import transferkit.cli
from transferkit.demo.access import JobLimit, read_logins

LOGIN = ("ann", "s3cret:with:colons")


@pytest.fixture(scope="module")
def served(tiny_run):
    from transferkit.demo import launch

    app = launch(tiny_run.path, port=free_port(), block=False, quiet=True, auth=[LOGIN])
    yield app, app.local_url.rstrip("/")
    app.close()


def test_requests_without_credentials_are_refused(served):
    app, url = served
    with httpx.Client(timeout=60) as anonymous:
        for path in ("/config", "/gradio_api/info", "/gradio_api/file=/etc/passwd"):
            assert anonymous.get(url + path).status_code == 401, path
        wrong = anonymous.post(url + "/login", data={"username": LOGIN[0],
                                                     "password": "guess"})
        assert wrong.status_code == 400 and anonymous.get(url + "/config").status_code == 401
    with httpx.Client(timeout=60) as user:
        assert user.post(url + "/login", data=dict(zip(("username", "password"), LOGIN))
                         ).status_code == 200
        assert user.get(url + "/gradio_api/info").status_code == 200


def test_only_files_in_the_upload_folder_are_served(served, tiny_run, tmp_path):
    app, url = served
    image = tiny_run.split_paths("test")[0]
    with httpx.Client(timeout=60) as user:
        user.post(url + "/login", data=dict(zip(("username", "password"), LOGIN)))
        with open(image, "rb") as f:
            (uploaded,) = user.post(url + "/gradio_api/upload",
                                    files={"files": (image.name, f)}).json()
        # The upload itself is served back (the route works) ...
        back = user.get(f"{url}/gradio_api/file={uploaded}")
        assert back.status_code == 200 and back.content == image.read_bytes()
        # ... but nothing outside the upload folder: system files, the run's own files,
        # the data it was trained on, or a path climbing out of the upload folder.
        for path in ("/etc/passwd", tiny_run.path / "model.keras", image,
                     f"{uploaded}/../../../../../../etc/passwd"):
            assert user.get(f"{url}/gradio_api/file={path}").status_code in (403, 404), path


def test_the_inside_tabs_heavy_views_have_their_own_bounded_group(served):
    app, _ = served
    heavy = [fn for fn in app.fns.values() if fn.concurrency_id == "inside-heavy"]
    assert len(heavy) == 4  # patches, dream, t-SNE map, depth probe


def test_a_busy_job_limit_refuses_at_once_then_serves_again():
    started, finish = threading.Event(), threading.Event()
    limit = JobLimit(1, lambda: gr.Error("busy"))

    @limit.guard
    def job(x):
        started.set()
        finish.wait(30)
        return x * 2

    results = []
    first = threading.Thread(target=lambda: results.append(job(1)))
    first.start()
    assert started.wait(30)
    with pytest.raises(gr.Error, match="busy"):
        job(2)  # refused while the first runs, not queued
    finish.set()
    first.join(30)
    assert results == [2] and job(3) == 6  # its slot was given back


@pytest.fixture
def launched(monkeypatch):
    """`launch`'s keyword arguments to Gradio (no model built, nothing served)."""
    calls = []
    monkeypatch.setattr("transferkit.demo.app.build_demo",
                        lambda path, **kwargs: gr.Blocks())
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: calls.append(kwargs))
    return calls


def test_serve_auth_and_auth_file_are_gradio_logins(launched, tmp_path, capsys):
    users = tmp_path / "users.txt"
    users.write_text("# the team\nbob:pw1\n\n  carol:pw:2  \n", encoding="utf-8")
    assert transferkit.cli.main(["serve", "run", "--host", "0.0.0.0", "--auth",
                                 ":".join(LOGIN), "--auth-file", str(users)]) == 0
    assert launched[0]["auth"] == [LOGIN, ("bob", "pw1"), ("carol", "pw:2")]
    assert capsys.readouterr().err == ""  # logins: no warning


@pytest.mark.parametrize("options, warned", [
    (["--host", "0.0.0.0"], "serving on 0.0.0.0 without --auth"),
    (["--share"], "--share without --auth"),
    ([], None),
])
def test_reachable_without_login_prints_one_warning_line(launched, capsys, options, warned):
    assert transferkit.cli.main(["serve", "run", *options]) == 0
    assert launched[0]["auth"] is None
    err = capsys.readouterr().err.splitlines()
    assert err == ([] if warned is None else [err[0]])
    if warned:
        assert err[0].startswith("transferkit: warning: ") and warned in err[0]


@pytest.mark.parametrize("value, message", [
    ("nocolon", "--auth: expected USER:PASSWORD"), (":pw", "an empty part"),
    ("ann:", "an empty part")])
def test_bad_logins_are_one_line_errors(launched, capsys, value, message):
    assert transferkit.cli.main(["serve", "run", "--auth", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not launched


def test_auth_file_errors_name_the_file_and_line(tmp_path):
    from transferkit.errors import ConfigError

    bad = tmp_path / "users.txt"
    bad.write_text("bob:pw\njustaname\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"users.txt, line 2: expected USER:PASSWORD"):
        read_logins(bad)
    with pytest.raises(ConfigError, match="cannot read it"):
        read_logins(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nobody\n")
    with pytest.raises(ConfigError, match="holds no USER:PASSWORD line"):
        read_logins(tmp_path / "empty.txt")
