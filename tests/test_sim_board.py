"""The simulated board (tools/sim_board.py) over a real connection: Fabric, paramiko and sshd.

Two boards run on free ports under a temporary boards folder: sim1 of the default kind (Coral-faithful
when this machine has a Python 3.7), sim2 on the host-Python fallback. Host keys are checked the way a
real board's must be: paramiko's RejectPolicy and only the boards' own known_hosts file (Fabric's
Connection would otherwise auto-add any unknown host key). The boards' Python environments are
created once per run under a temporary folder (pip installs numpy, a TFLite runtime and pytest), or
reused from $GRASPTPU_BOARD_ENVS when that is set.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
import tomllib
from click.testing import CliRunner
from fabric import Connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import sim_board

pytestmark = pytest.mark.skipif(not sim_board.SSHD.exists(), reason="openssh-server is not installed")


KINDS = {"sim1": "auto", "sim2": "host"}


@pytest.fixture(scope="module")
def boards(tmp_path_factory, board_envs):
    """(boards dir, {name: inventory entry}) for two running boards; stopped afterwards."""
    boards_dir = tmp_path_factory.mktemp("boards")
    entries = {}
    try:
        for name, kind in KINDS.items():
            entries[name] = sim_board.start_board(boards_dir, name, sim_board.free_port(), board_envs, kind)
        yield boards_dir, entries
    finally:
        for name in sim_board.list_boards(boards_dir):
            sim_board.stop_board(boards_dir, name)


def run(conn: Connection, command: str, **kwargs):
    """conn.run without forwarding our stdin (invoke would read pytest's captured stdin and fail)."""
    return conn.run(command, hide=True, in_stream=False, **kwargs)


def connect(entry: dict, known_hosts: str | Path | None = None) -> Connection:
    """An opened Fabric connection that trusts only the given known_hosts file."""
    conn = Connection(entry["host"], port=entry["port"], user=entry["user"], connect_timeout=10,
                      connect_kwargs={"key_filename": entry["key_file"], "look_for_keys": False,
                                      "allow_agent": False})
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(str(known_hosts or entry["known_hosts"]))
    conn.open()
    return conn


@pytest.mark.slow
def test_inventory_lists_both_boards(boards):
    boards_dir, entries = boards
    with (boards_dir / "boards.toml").open("rb") as f:
        inventory = tomllib.load(f)["boards"]
    assert inventory == entries
    for name, entry in entries.items():
        assert entry["simulated"] is True and entry["host"] == "127.0.0.1"
        assert Path(entry["root"]) == boards_dir / name / "root" and Path(entry["root"]).is_dir()
    lines = (boards_dir / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in lines) == sorted(
        f"[127.0.0.1]:{e['port']}" for e in entries.values())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sim1", "sim2"])
def test_fabric_runs_and_transfers_through_sshd(boards, name, tmp_path):
    _, entries = boards
    entry = entries[name]
    payload = bytes(range(256)) * 1000 + name.encode()
    (tmp_path / "payload.bin").write_bytes(payload)
    with connect(entry) as conn:
        assert run(conn, "echo ok").stdout == "ok\n"
        remote = f"{entry['root']}/payload.bin"
        conn.put(str(tmp_path / "payload.bin"), remote=remote)
        assert Path(remote).read_bytes() == payload  # the board's root is a folder on this machine
        conn.get(remote, local=str(tmp_path / "back.bin"))
        module = entry["runtime"].split()[0]
        result = run(conn, f"{entry['python']} -c \"import numpy, {module}; print('ok')\"")
        assert result.stdout == "ok\n"
        isolated = run(conn, f"{entry['python']} -c 'import click'", warn=True)
        assert isolated.failed, "the board python must not see the host's packages"
    assert (tmp_path / "back.bin").read_bytes() == payload


@pytest.mark.slow
def test_unknown_host_is_rejected(boards, tmp_path):
    _, entries = boards
    other = tmp_path / "known_hosts_other"
    other.write_text(f"[127.0.0.1]:{entries['sim2']['port']} {host_key(boards, 'sim2')}\n")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(entries["sim1"], other)


@pytest.mark.slow
def test_changed_host_key_is_rejected(boards, tmp_path):
    _, entries = boards
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{entries['sim1']['port']} {host_key(boards, 'sim2')}\n")
    with pytest.raises(paramiko.BadHostKeyException):  # a subclass of SSHException
        connect(entries["sim1"], wrong)


def host_key(boards, name: str) -> str:
    return sim_board.public_key(boards[0] / name / "ssh_host_ed25519_key")


@pytest.mark.slow
def test_up_is_idempotent_and_refuses_a_taken_port(boards):
    boards_dir, entries = boards
    again = sim_board.start_board(boards_dir, "sim1", entries["sim1"]["port"],
                                  Path(entries["sim1"]["python"]).parents[2], KINDS["sim1"])
    assert again == entries["sim1"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(sim_board.cli, ["up", "--name", "sim3", "--port", str(port),
                                                    "--boards-dir", str(boards_dir)])
    assert result.exit_code == 2
    assert "sim3" in result.output and "already in use" in result.output
    assert str(boards_dir / "sim3" / "sshd.log") in result.output
    sim_board.stop_board(boards_dir, "sim3", purge=True)


@pytest.mark.slow
def test_status_and_down(boards):
    boards_dir, entries = boards
    runner = CliRunner()
    status = runner.invoke(sim_board.cli, ["status", "--boards-dir", str(boards_dir)])
    assert status.exit_code == 0 and status.output.count("running") == 2
    assert runner.invoke(sim_board.cli, ["down", "--name", "sim2", "--boards-dir", str(boards_dir)]).exit_code == 0
    with pytest.raises(OSError):  # paramiko's NoValidConnectionsError: connection refused
        connect(entries["sim2"])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", entries["sim2"]["port"]), timeout=5).close()
    status = runner.invoke(sim_board.cli, ["status", "--boards-dir", str(boards_dir)])
    assert [line.split()[3] for line in status.output.splitlines()] == ["running", "stopped"]
    with connect(entries["sim1"]) as conn:  # the other board is untouched
        assert run(conn, "echo ok").stdout == "ok\n"


@pytest.mark.slow
def test_purge_forgets_the_board(boards):
    boards_dir, entries = boards
    sim_board.stop_board(boards_dir, "sim2", purge=True)
    assert not (boards_dir / "sim2").exists()
    assert list(sim_board.read_inventory(boards_dir)) == ["sim1"]
    assert f":{entries['sim2']['port']} " not in (boards_dir / "known_hosts").read_text()


def test_cli_runs_as_a_script():
    result = subprocess.run([sys.executable, str(Path(sim_board.__file__)), "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "status" in result.stdout


@pytest.mark.slow
def test_the_default_board_runs_a_coral_boards_software(boards):
    """Python 3.7, numpy < 1.20 and PyPI's oldest tflite-runtime for 3.7, as recorded and as run."""
    if sim_board.find_python37() is None:
        pytest.skip("no Python 3.7 on this machine: the board falls back to the host's Python")
    _, entries = boards
    entry = entries["sim1"]
    assert entry["python_version"].startswith("3.7.") and entry["runtime"] == "tflite_runtime 2.7.0"
    assert tuple(int(x) for x in entry["numpy_version"].split(".")[:2]) < (1, 20)
    assert entry["max_p99_ms"] == 40.0 and entry["max_miss_rate"] == 1e-3 and "says nothing about a Coral board" in entry["latency_note"]
    with connect(entry) as conn:
        out = run(conn, f"{entry['python']} -c \"import sys, numpy, tflite_runtime; "
                        f"print(sys.version_info[:2], numpy.__version__, tflite_runtime.__version__)\"").stdout
    assert out.split(")")[0] + ")" == "(3, 7)" and out.split()[-2:] == [entry["numpy_version"], "2.7.0"]
    assert entries["sim2"]["runtime"].startswith("ai_edge_litert ") and entries["sim2"]["max_p99_ms"] == 2.0


def test_without_python37_the_board_falls_back_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no python3.7 on PATH ...
    monkeypatch.setattr(sim_board, "PYENV_ROOT", tmp_path)  # ... nor in pyenv
    said = []
    kind, interpreter = sim_board.choose_kind("auto", said.append)
    assert kind is sim_board.HOST_KIND and interpreter == sys.executable
    assert len(said) == 1 and "no Python 3.7 here" in said[0] and "which no Coral board has" in said[0]
    with pytest.raises(sim_board.BoardError, match="no Python 3.7 on this machine"):
        sim_board.choose_kind("coral")
    fake = tmp_path / "python3.7"  # a pyenv shim whose version is not installed is not a Python 3.7
    fake.write_text("#!/bin/sh\necho 'pyenv: python3.7: command not found' >&2\nexit 127\n")
    fake.chmod(0o755)
    assert sim_board.find_python37() is None
