"""The built wheel, installed into a fresh venv, run from a folder holding a user's own `models.py` and `stream/`.

Before the `fes_live` namespace, these shadowed our top-level packages. The fresh venv reuses this venv's installed
dependencies through a .pth file (no download of torch, MediaPipe...); fes_live itself comes only from the wheel.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import venv

import pytest

from conftest import FACE_MODEL, REPO, VIDEO, Lines, need, scaled
from test_events_wire import free_port

SHADOW = 'raise ImportError("the user\'s own {} was imported instead of fes_live\'s")\n'


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=scaled(600))
    assert built.returncode == 0, built.stdout + built.stderr
    wheel = next((tmp / "dist").glob("fes_live-*.whl"))
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # this venv's dependencies (and what it reuses itself), after the fresh venv's own site-packages: a .pth line
    # appends to sys.path, and the .pth files found there are not run (so no editable fes_live comes along)
    deps = [p for p in sys.path if p.endswith("site-packages")]
    with open(os.path.join(site, "_test_deps.pth"), "w") as f:
        f.write("".join(p + "\n" for p in deps))
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                                str(wheel)], capture_output=True, text=True, timeout=scaled(300))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    user = tmp / "user"  # the user's project folder, the working directory of everything below
    (user / "stream").mkdir(parents=True)
    (user / "models.py").write_text(SHADOW.format("models.py"))
    (user / "stream" / "__init__.py").write_text(SHADOW.format("stream/"))
    (user / "subscriber.py").write_text((REPO / "examples" / "subscriber.py").read_text())
    return env_dir, user


def run_in(user, *cmd, timeout_s=120):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(list(cmd), cwd=user, env=env, capture_output=True, text=True, timeout=scaled(timeout_s))


@pytest.mark.slow
def test_wheel_runs_beside_user_files_named_models_and_stream(wheel_venv, procs):
    env_dir, user = wheel_venv
    python, fes_live = str(env_dir / "bin" / "python"), str(env_dir / "bin" / "fes-live")
    done = run_in(user, python, "-m", "fes_live", "--version")
    assert done.returncode == 0 and re.fullmatch(r"fes-live \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout + done.stderr
    where = run_in(user, python, "-c", "import fes_live.models.online, fes_live.stream.client as c, models; "
                   "print(c.__file__)")
    assert where.returncode != 0 and "the user's own models.py" in where.stderr  # the user's file is theirs...
    where = run_in(user, python, "-c", "import fes_live.models.online, fes_live.stream.client as c; print(c.__file__)")
    assert where.returncode == 0 and where.stdout.startswith(str(env_dir)), where.stdout + where.stderr  # ...ours ours
    # the subscriber example from the user's folder, and fes-live --source through the installed console script
    need(FACE_MODEL)
    smile = need(VIDEO / "pyfeat_single_face.mp4")
    events, replay = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(FES_FACE_MODEL=str(FACE_MODEL), FES_NO_DOWNLOAD="1", XDG_RUNTIME_DIR=str(user))
    # Ctrl-C as in a terminal: a suite started in the background (`cmd &` in a script) hands its children SIGINT
    # ignored, and Python then never raises KeyboardInterrupt
    sub = procs.popen([python, "-X", "faulthandler", "-u", "subscriber.py", events, replay], cwd=user, env=env,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    sub_out = Lines(sub)
    run = procs.popen([fes_live, "--source", str(smile), "--events-endpoint", events, "--replay-endpoint", replay],
                      cwd=user, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_out = Lines(run)
    assert run.wait(scaled(240)) == 0, run_out.join()[-3000:]
    log = run_out.join()
    assert "pyfeat_single_face" in log and "expression" in log and "Traceback" not in log, log[-3000:]
    assert sub_out.wait_for(r"pyfeat_single_face: macro happiness from", 15), sub_out.text + log[-2000:]
    sub.send_signal(signal.SIGINT)  # how the example ends: quietly
    try:
        code = sub.wait(scaled(15))
    except subprocess.TimeoutExpired:  # say where it is stuck: faulthandler prints every thread's stack on SIGABRT
        sub.send_signal(signal.SIGABRT)
        pytest.fail("the subscriber example did not end on SIGINT:\n" + sub_out.join(5)[-6000:])
    assert code == 0
    text = sub_out.join()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    finals = [line for line in text.splitlines() if " from " in line]
    assert len(finals) == len(set(finals)) >= 1, text  # each expression once
