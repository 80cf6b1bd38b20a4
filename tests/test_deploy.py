"""Deploy through real Fabric and sshd to simulated boards: parallel, atomic, verified, reversible."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from host.boards.inventory import load_inventory
from host.boards.remote import BoardError, connect
from host.cli import main
from host.boards.deploy import deploy_board, payload, release_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import sim_board  # noqa: E402

pytestmark = pytest.mark.skipif(not sim_board.SSHD.exists(), reason="openssh-server is not installed (make sshd)")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, board_envs):
    """Three running simulated boards (Coral-faithful where this machine has a Python 3.7) and their
    inventory file."""
    boards_dir = tmp_path_factory.mktemp("fleet")
    try:
        for name in ("b1", "b2", "b3"):
            sim_board.start_board(boards_dir, name, sim_board.free_port(), board_envs)
        yield boards_dir, sim_board.inventory_file(boards_dir)
    finally:
        for name in sim_board.list_boards(boards_dir):
            sim_board.stop_board(boards_dir, name)


def board_state(inventory: Path, name: str) -> dict:
    board = load_inventory(inventory)[name]
    conn = connect(board)
    try:
        out = conn.run(f"cd {board.root}/current && {board.python} -m device.release status {board.root}",
                       hide=True, in_stream=False).stdout
    finally:
        conn.close()
    return json.loads(out.strip().splitlines()[-1])


def release_json(inventory: Path, name: str) -> dict:
    board = load_inventory(inventory)[name]
    return json.loads((Path(board.root) / "current" / "release.json").read_text())  # a simulated board's disk


@pytest.mark.slow
def test_deploy_to_three_boards_in_parallel_then_run_on_them(fleet, quantised):
    boards_dir, inventory = fleet
    _, detector, classifier, _ = quantised
    result = CliRunner().invoke(main, ["deploy", str(detector), str(classifier), "--all", "--inventory", str(inventory)])
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("board b") for line in result.output.splitlines()) == 3
    states = [board_state(inventory, n) for n in ("b1", "b2", "b3")]
    # each board's release id is minted under that board's lock (so ids sort in switch order on
    # each board); the release itself, its files and their sha256, is one and the same everywhere
    assert all(s["current"].endswith(f"-{detector.name}+{classifier.name}") for s in states)
    records = [release_json(inventory, n) for n in ("b1", "b2", "b3")]
    assert all(r["files"] == records[0]["files"] for r in records) and records[0]["files"]
    board = load_inventory(inventory)["b2"]
    conn = connect(board)
    try:  # the deployed runner works on the board's own Python
        out = conn.run(f"cd {board.root}/current && {board.python} -m device.bench models/{detector.name} "
                       f"--invokes 50 --json -", hide=True, in_stream=False).stdout
    finally:
        conn.close()
    r = json.loads(out)
    assert f"{r['runtime']} {r['runtime_version']}" == board.runtime  # what the inventory records
    assert_same_decisions_as_the_host(r)


def assert_same_decisions_as_the_host(r: dict) -> None:
    """What carries across runtimes: accuracy and argmax equal to the host's int8 model (the tiny
    test models leave no room for a rounding difference to flip one); bytes only on the host's
    own runtime (Coral's runtime and the Edge TPU round LOGISTIC/TANH differently)."""
    acc = r["accuracy"]
    assert acc["host_int8_argmax_agreement"] >= 0.99 and acc["accuracy"] >= r["host"]["int8"]["accuracy"] - 0.005
    if r["runtime"] == "ai_edge_litert":
        assert acc["host_int8_bit_exact"] == 1.0


@pytest.mark.slow
def test_rollback_returns_to_the_previous_release_and_old_ones_are_pruned(fleet, quantised):
    _, inventory = fleet
    _, detector, _, _ = quantised
    runner = CliRunner()
    ids = []
    for _ in range(3):
        assert runner.invoke(main, ["deploy", str(detector), "--board", "b1", "--inventory", str(inventory),
                                    "--keep", "2"]).exit_code == 0
        ids.append(board_state(inventory, "b1")["current"])
    state = board_state(inventory, "b1")
    assert state["releases"] == ids[1:]  # keep 2
    result = runner.invoke(main, ["rollback", "--board", "b1", "--inventory", str(inventory)])
    assert result.exit_code == 0 and ids[1] in result.output
    assert board_state(inventory, "b1")["current"] == ids[1]
    result = runner.invoke(main, ["rollback", "--board", "b1", "--inventory", str(inventory)])
    assert result.exit_code == 2 and "no earlier release" in result.output


@pytest.mark.slow
def test_a_file_changed_during_the_deploy_is_caught_on_the_board(fleet, quantised, tmp_path):
    _, inventory = fleet
    _, detector, _, _ = quantised
    board = load_inventory(inventory)["b3"]
    before = board_state(inventory, "b3")["current"] if _has_release(inventory, "b3") else None
    files = payload([detector])
    record = release_record(files, "ZRec50-grasp-phase")
    record["files"][0]["sha256"] = "0" * 64  # what arrives is not what was hashed
    with pytest.raises(BoardError, match="verify on the board: .* does not match its sha256"):
        deploy_board(board, files, record)
    after = board_state(inventory, "b3")["current"] if _has_release(inventory, "b3") else None
    assert after == before


def _has_release(inventory: Path, name: str) -> bool:
    board = load_inventory(inventory)[name]
    conn = connect(board)
    try:
        return conn.run(f"test -L {board.root}/current", warn=True, hide=True, in_stream=False).exited == 0
    finally:
        conn.close()


@pytest.mark.slow
def test_a_cut_connection_keeps_the_old_release(fleet, quantised, tmp_path):
    boards_dir, inventory = fleet
    _, detector, _, _ = quantised
    runner = CliRunner()
    assert runner.invoke(main, ["deploy", str(detector), "--board", "b2", "--inventory", str(inventory)]).exit_code == 0
    old = board_state(inventory, "b2")["current"]
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(128 << 20))
    files = payload([detector]) + [(big, "models/big.bin")]
    record = release_record(files, "ZRec50-grasp-phase")
    sshd_pid = sim_board.read_pid(sim_board.board_dir(boards_dir, "b2"))

    root = Path(load_inventory(inventory)["b2"].root)  # the simulated board's disk is ours to watch

    def cut() -> None:  # drop the network as soon as the big file is partly on the board
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            arrived = list(root.glob("releases/*.partial/models/big.bin"))
            if arrived and arrived[0].stat().st_size > (8 << 20):
                for pid in sim_board.children(sshd_pid):  # the per-connection sshd processes
                    os.kill(pid, signal.SIGKILL)
                return
            time.sleep(0.002)

    threading.Thread(target=cut, daemon=True).start()
    with pytest.raises(BoardError, match="board b2 .*: upload: .*the previous release stays active"):
        deploy_board(load_inventory(inventory)["b2"], files, record)
    assert board_state(inventory, "b2")["current"] == old
    # Fabric reconnects for the unlock, so the lock is usually given back; when it is not, the
    # next deploy from this machine sees that its owner is no longer running: no manual step
    left = (root / ".deploy-lock").is_dir()
    result = runner.invoke(main, ["deploy", str(detector), "--board", "b2", "--inventory", str(inventory)])
    assert result.exit_code == 0, result.output
    assert ("removed the lock of a deploy that is no longer running" in result.output) == left
    assert not [r for r in board_state(inventory, "b2")["releases"] if r.endswith(".partial")]
    assert not (root / ".deploy-lock").exists()


@pytest.mark.slow
def test_a_second_deploy_waits_for_the_lock_then_fails_cleanly(fleet, quantised):
    _, inventory = fleet
    _, detector, _, _ = quantised
    board = load_inventory(inventory)["b1"]
    conn = connect(board)
    conn.run(f"mkdir -p {board.root} && mkdir {board.root}/.deploy-lock && echo other-host > {board.root}/.deploy-lock/owner",
             hide=True, in_stream=False)
    runner = CliRunner()
    try:
        t0 = time.monotonic()
        result = runner.invoke(main, ["deploy", str(detector), "--board", "b1", "--inventory", str(inventory),
                                      "--wait", "1"])
        assert result.exit_code == 1 and "another deploy holds the board (other-host)" in result.output
        assert "grasptpu unlock --board b1" in result.output
        assert time.monotonic() - t0 >= 1.0
        assert conn.run(f"cat {board.root}/.deploy-lock/owner", hide=True, in_stream=False).stdout.strip() == "other-host"
        # a rollback takes the same lock: it cannot cross a running deploy's switch
        result = runner.invoke(main, ["rollback", "--board", "b1", "--inventory", str(inventory)])
        assert result.exit_code == 2 and "rollback: another deploy holds the board (other-host)" in result.output
        # the explicit way out, for a deploy that died elsewhere
        result = runner.invoke(main, ["unlock", "--board", "b1", "--inventory", str(inventory)])
        assert result.exit_code == 0 and "removed the deploy lock of other-host" in result.output
        result = runner.invoke(main, ["unlock", "--board", "b1", "--inventory", str(inventory)])
        assert result.exit_code == 0 and "board b1: no deploy lock" in result.output
        # a lock of a deploy running on this machine is kept unless --force
        from host.boards.lock import _HELD, _new_token

        mine = _new_token()
        _HELD.add(mine)
        try:
            conn.run(f"mkdir {board.root}/.deploy-lock && echo '{mine}' > {board.root}/.deploy-lock/owner",
                     hide=True, in_stream=False)
            result = runner.invoke(main, ["unlock", "--board", "b1", "--inventory", str(inventory)])
            assert result.exit_code == 2 and "belongs to a deploy running on this machine" in result.output
            result = runner.invoke(main, ["unlock", "--board", "b1", "--inventory", str(inventory), "--force"])
            assert result.exit_code == 0 and f"removed the deploy lock of {mine}" in result.output
        finally:
            _HELD.discard(mine)
    finally:
        conn.run(f"rm -rf {board.root}/.deploy-lock", hide=True, in_stream=False)
        conn.close()


def test_only_a_dead_deploy_of_this_very_machine_counts_as_stale():
    """Pure logic, no board: who may take over a lock without asking."""
    from host.boards.lock import _HELD, _new_token, _process_space, owner_state

    here = _process_space()
    assert here is not None  # Linux with a machine id: the CI machine and this one
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        owner = "host={} pid={} at=2026-01-01T00:00:00+00:00 id=0123456789ab"
        assert owner_state(owner.format(here, dead.pid)) == "stale"
        assert owner_state(owner.format(here, alive.pid)) == "running"
        assert owner_state(owner.format("elsewhere/0123456789abcdef", dead.pid)) == "unknown"
        assert owner_state(owner.format(here.split("/")[0] + "/unknown", dead.pid)) == "unknown"
        assert owner_state("other-host") == "unknown"
        mine = _new_token()  # this process: running while it holds the token, stale after
        _HELD.add(mine)
        assert owner_state(mine) == "running"
        _HELD.discard(mine)
        assert owner_state(mine) == "stale"
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_a_board_named_twice_is_deployed_once_and_aliases_are_refused(fleet, quantised, tmp_path):
    boards_dir, inventory = fleet
    _, detector, _, _ = quantised
    runner = CliRunner()
    result = runner.invoke(main, ["deploy", str(detector), "--board", "b1", "--board", "b1", "--inventory", str(inventory)])
    assert result.exit_code == 0 and result.output.count("board b1: current =") == 1, result.output
    boards = sim_board.read_inventory(boards_dir)
    boards["again"] = boards["b1"]
    alias = tmp_path / "boards.toml"
    alias.write_text(sim_board.toml_text(boards))
    result = runner.invoke(main, ["deploy", str(detector), "--board", "b1", "--board", "again", "--inventory", str(alias)])
    assert result.exit_code == 2 and "boards 'b1' and 'again' are the same board" in result.output, result.output


@pytest.mark.slow
@pytest.mark.parametrize("who", ["exited process", "this process, deploy over"])
def test_a_lock_left_by_a_dead_deploy_of_this_machine_is_removed(fleet, quantised, who):
    """The owner names this machine and a deploy that is not running any more: safe to take
    over, and said. (A lock from another machine is never taken over: previous test.)"""
    from host.boards.lock import _new_token, _process_space

    _, inventory = fleet
    _, detector, _, _ = quantised
    board = load_inventory(inventory)["b3"]
    if who == "exited process":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        owner = f"host={_process_space()} pid={dead.pid} at=2026-01-01T00:00:00+00:00 id=0123456789ab"
    else:  # a token this process minted for a deploy that ended without unlocking
        owner = _new_token()
    conn = connect(board)
    try:
        conn.run(f"mkdir -p {board.root} && mkdir {board.root}/.deploy-lock && echo '{owner}' > {board.root}/.deploy-lock/owner",
                 hide=True, in_stream=False)
        result = CliRunner().invoke(main, ["deploy", str(detector), "--board", "b3", "--inventory", str(inventory)])
        assert result.exit_code == 0, result.output
        assert f"removed the lock of a deploy that is no longer running ({owner})" in result.output
        assert conn.run(f"test -e {board.root}/.deploy-lock", warn=True, hide=True, in_stream=False).exited == 1
        # a lock with no owner (died between mkdir and writing it) is taken over once it is old
        conn.run(f"mkdir {board.root}/.deploy-lock && touch -d '-2 minutes' {board.root}/.deploy-lock",
                 hide=True, in_stream=False)
        result = CliRunner().invoke(main, ["deploy", str(detector), "--board", "b3", "--inventory", str(inventory)])
        assert result.exit_code == 0 and "removed a lock with no owner older than 60 s" in result.output, result.output
    finally:
        conn.run(f"rm -rf {board.root}/.deploy-lock", hide=True, in_stream=False)
        conn.close()


@pytest.mark.slow
def test_unknown_and_changed_host_keys_are_refused(fleet, quantised, tmp_path):
    _, inventory = fleet
    _, detector, _, _ = quantised
    text = inventory.read_text()
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strange = tmp_path / "inventory.toml"
    strange.write_text(text.replace(str(sim_board.known_hosts_file(inventory.parent)), str(empty)))
    runner = CliRunner()
    result = runner.invoke(main, ["deploy", str(detector), "--board", "b3", "--inventory", str(strange)])
    assert result.exit_code == 1 and "unknown host key" in result.output and "--trust-new-host" in result.output
    result = runner.invoke(main, ["deploy", str(detector), "--board", "b3", "--inventory", str(strange), "--trust-new-host"])
    assert result.exit_code == 0, result.output
    assert "ssh-ed25519" in empty.read_text()  # recorded: the next connection is verified against it
    port = load_inventory(strange)["b3"].port
    empty.write_text(f"[127.0.0.1]:{port} ssh-ed25519 {_other_key()}\n")
    result = runner.invoke(main, ["deploy", str(detector), "--board", "b3", "--inventory", str(strange), "--trust-new-host"])
    assert result.exit_code == 1 and "host key CHANGED" in result.output


def _other_key() -> str:
    """The public half of some other ed25519 key, as a stranger's machine would present."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/k"], check=True)
        return Path(f"{d}/k.pub").read_text().split()[1]


@pytest.mark.slow
def test_unreachable_board_and_unknown_names_are_one_line(fleet, quantised, tmp_path):
    boards_dir, inventory = fleet
    _, detector, _, _ = quantised
    dead = tmp_path / "dead.toml"
    entry = (f'[boards.gone]\nhost = "127.0.0.1"\nport = {sim_board.free_port()}\nuser = "x"\n'
             f'known_hosts = "{tmp_path}/kh"\nroot = "/tmp/x"\n')
    dead.write_text(entry + f'key_file = "{sim_board.client_key(boards_dir)}"\n')
    runner = CliRunner()
    result = runner.invoke(main, ["deploy", str(detector), "--board", "gone", "--inventory", str(dead)])
    assert result.exit_code == 1 and "board gone (x@127.0.0.1:" in result.output and "connect: unreachable" in result.output
    dead.write_text(entry + f'key_file = "{tmp_path}/none"\n')  # a missing key is said as such, not "unreachable"
    result = runner.invoke(main, ["deploy", str(detector), "--board", "gone", "--inventory", str(dead)])
    assert result.exit_code == 1 and f"key_file {tmp_path}/none does not exist" in result.output
    result = runner.invoke(main, ["deploy", str(detector), "--board", "nope", "--inventory", str(inventory)])
    assert result.exit_code == 2 and "unknown board 'nope'" in result.output


@pytest.mark.slow
def test_bench_and_firmware_tests_over_ssh(fleet, quantised, tmp_path):
    _, inventory = fleet
    _, detector, classifier, _ = quantised
    runner = CliRunner()
    assert runner.invoke(main, ["deploy", str(detector), str(classifier), "--board", "b3",
                                "--inventory", str(inventory)]).exit_code == 0
    out = tmp_path / "bench.json"
    result = runner.invoke(main, ["bench", "--board", "b3", "--inventory", str(inventory), "--invokes", "300",
                                  "--max-miss-rate", "0.01", "--json", str(out)])
    assert result.exit_code == 0, result.output
    board = load_inventory(inventory)["b3"]
    runtime = board.runtime.split()[0]
    assert f"device on board b3: {runtime}" in result.output and "host: int8 TFLite" in result.output
    assert (f"board b3: runs Python {board.python_version}, numpy {board.numpy_version}, {board.runtime}"
            in result.output) and "they differ" not in result.output
    assert (f"p99 <= {board.max_p99_ms:g} ms, stream bins past the deadline <= 0.01 ({board.latency_note})"
            in result.output)  # the board's own p99 threshold; the miss rate given on the command line
    assert "stream ZRec50-grasp-phase + ZRec50-object" in result.output and "board b3: PASS" in result.output
    r = json.loads(out.read_text())[0]
    assert set(r["models"]) == {detector.name, classifier.name} and r["stream"]["trials"]["n"] > 0
    # a threshold no board can meet is reported as a failure, with the reason
    result = runner.invoke(main, ["bench", "--board", "b3", "--inventory", str(inventory), "--invokes", "50",
                                  "--no-stream", "--max-p99-ms", "0.000001"])
    assert result.exit_code == 1 and "p99 latency" in result.output

    # a project's settings above the board root (the simulated board lives inside the repository)
    # must not reach the board's pytest: it names an option the board's pytest does not know
    boards_dir = fleet[0]
    (boards_dir / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntimeout = 5\n')
    try:
        result = runner.invoke(main, ["firmware-test", "--board", "b3", "--inventory", str(inventory),
                                      "--reports", str(tmp_path / "reports")])
    finally:
        (boards_dir / "pyproject.toml").unlink()
    assert result.exit_code == 0, result.output
    assert f"board b3: runs Python {board.python_version}" in result.output
    assert "PytestConfigWarning" not in result.output  # firmware_tests/pytest.ini is the board's
    junit = (tmp_path / "reports" / "b3-firmware-junit.xml").read_text()
    assert 'failures="0"' in junit and "test_golden_vectors_match_the_host" in junit
    assert f'<property name="python" value="{board.python_version}"' in junit  # what the board ran on
    assert "PytestWarning" not in result.output
    assert "no compiled Edge TPU model" in result.output  # the Edge TPU test skips, saying why

    board = load_inventory(inventory)["b3"]  # damage one file on the board: the suite must catch it
    conn = connect(board)
    try:
        conn.run(f"cd {board.root}/current/models/{detector.name} && printf 'x' >> test_set.npz",
                 hide=True, in_stream=False)
    finally:
        conn.close()
    result = runner.invoke(main, ["firmware-test", "--board", "b3", "--inventory", str(inventory),
                                  "--reports", str(tmp_path / "reports")])
    assert result.exit_code == 1 and "failed" in result.output
    assert "sha256 does not match" in (tmp_path / "reports" / "b3-firmware-junit.xml").read_text()


@pytest.mark.slow
def test_a_full_disk_on_the_board_keeps_the_old_release(fleet, quantised, tmp_path, monkeypatch):
    """The board root on a tmpfs with room for one release but not two (needs root to mount)."""
    import subprocess

    _, inventory = fleet
    _, detector, _, _ = quantised
    release_bytes = sum(p.stat().st_size for p, _ in payload([detector]))
    mount = tmp_path / "small-disk"
    mount.mkdir()
    size_kib = int(release_bytes * 1.6 / 1024) + 64
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    try:
        small = tmp_path / "inventory.toml"
        b1_root = load_inventory(inventory)["b1"].root
        small.write_text(inventory.read_text().replace(f'"{b1_root}"', f'"{mount}"'))
        runner = CliRunner()
        result = runner.invoke(main, ["deploy", str(detector), "--board", "b1", "--inventory", str(small)])
        assert result.exit_code == 0, result.output
        first = board_state(small, "b1")["current"]
        result = runner.invoke(main, ["deploy", str(detector), "--board", "b1", "--inventory", str(small)])
        assert result.exit_code == 1 and "board b1" in result.output, result.output
        assert "check free space: the board's disk has" in result.output and "KiB free" in result.output
        assert board_state(small, "b1")["current"] == first
        # the disk fills while uploading (another writer, or a check that guessed wrong): the upload
        # fails, names the full disk and removes its partial release, so the disk is not left full
        import host.boards.deploy as deploy_mod

        monkeypatch.setattr(deploy_mod, "_check_space", lambda *args: None)
        result = runner.invoke(main, ["deploy", str(detector), "--board", "b1", "--inventory", str(small)])
        assert result.exit_code == 1 and "upload: the board's disk is full" in result.output, result.output
        assert "partial upload is removed" in result.output and not list(mount.glob("releases/*.partial"))
        assert board_state(small, "b1")["current"] == first
        board = load_inventory(small)["b1"]
        conn = connect(board)
        try:  # the active release still runs
            out = conn.run(f"cd {mount}/current && {board.python} -m device.bench models/{detector.name} "
                           "--invokes 20 --json -", hide=True, in_stream=False).stdout
        finally:
            conn.close()
        assert_same_decisions_as_the_host(json.loads(out))
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["old python", "no numpy", "no python"])
def test_a_board_python_that_cannot_run_the_runner_is_refused_before_anything_changes(fleet, quantised, tmp_path,
                                                                                      problem):
    _, inventory = fleet
    _, detector, _, _ = quantised
    runner = CliRunner()
    assert runner.invoke(main, ["deploy", str(detector), "--board", "b2", "--inventory", str(inventory)]).exit_code == 0
    before = board_state(inventory, "b2")
    if problem == "old python":
        old = sorted(Path.home().glob(".pyenv/versions/3.6*/bin/python3.6")) or sorted(
            Path.home().glob(".pyenv/versions/2.7*/bin/python2.7"))
        if not old:
            pytest.skip("no Python older than 3.7 on this machine")
        python, expected = str(old[0]), "is older than 3.7, which the runner needs"
    elif problem == "no numpy":
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
        python, expected = str(tmp_path / "bare" / "bin" / "python"), "has no numpy, which the runner needs"
    else:
        python, expected = str(tmp_path / "nowhere" / "python3"), "does not run there"
    b2_python = load_inventory(inventory)["b2"].python
    broken = tmp_path / "inventory.toml"
    broken.write_text(inventory.read_text().replace(f'python = "{b2_python}"', f'python = "{python}"'))
    result = runner.invoke(main, ["deploy", str(detector), "--board", "b2", "--inventory", str(broken)])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("grasptpu: error: board b2 (") and "check the board's Python" in lines[0]
    assert expected in lines[0], lines[0]
    after = board_state(inventory, "b2")
    assert after == before  # same current release, same releases, nothing uploaded
    root = Path(load_inventory(inventory)["b2"].root)
    assert not (root / ".deploy-lock").exists() and not list((root / "releases").glob("*.partial"))
