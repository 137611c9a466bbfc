import subprocess
import sys
from pathlib import Path

from echod.config import parse
from echod.systemd import generator
from echod.systemd.generator import main, socket_drop_in

ROOT = Path(__file__).resolve().parents[2]


def test_drop_in_replaces_the_units_addresses_with_the_listeners():
    settings = parse(
        "[listener:echo]\nprotocol = echo\nport = 7\n"
        "[listener:bc]\nprotocol = bytecount\nport = 50007\naddress = 127.0.0.1\n"
        "[listener:test]\nprotocol = echo\nport = 0\n"
        "[listener:udp]\nprotocol = echo\ntransport = udp\nport = 7\n",
        "/etc/echod.conf",
    )
    assert socket_drop_in(settings).splitlines()[2:] == [
        "[Socket]",
        "ListenStream=",
        "ListenDatagram=",
        "ListenStream=[::]:7",
        "ListenStream=127.0.0.1:50007",
        "ListenDatagram=[::]:7",
    ]


def test_the_metrics_port_is_left_to_echod_to_bind():
    settings = parse("[echod]\nmetrics = 127.0.0.1:9207\n[listener:echo]\nprotocol = echo\nport = 7\n")
    drop_in = socket_drop_in(settings)
    assert "9207" not in drop_in
    assert drop_in.splitlines()[-1] == "ListenStream=[::]:7"


def test_generator_writes_the_drop_in_where_systemd_reads_it(tmp_path, monkeypatch):
    config = tmp_path / "echod.conf"
    config.write_text("[listener:echo]\nprotocol = echo\nport = 7007\n")
    monkeypatch.setenv("ECHOD_CONFIG", str(config))
    assert main([str(tmp_path / "normal"), str(tmp_path / "early"), str(tmp_path / "late")]) == 0
    for unit in ("echod.socket", "echod@.socket"):
        drop_in = tmp_path / "normal" / f"{unit}.d" / "50-echod-conf.conf"
        assert "ListenStream=[::]:7007" in drop_in.read_text().splitlines()


def test_invalid_config_closes_every_network_port_and_still_succeeds(tmp_path, monkeypatch, capsys):
    config = tmp_path / "echod.conf"
    config.write_text("[listener:echo]\nprotocol = echo\n")
    monkeypatch.setenv("ECHOD_CONFIG", str(config))
    assert main([str(tmp_path / "normal")]) == 0
    for unit in ("echod.socket", "echod@.socket"):
        lines = (tmp_path / "normal" / f"{unit}.d" / "50-echod-conf.conf").read_text().splitlines()
        listens = [line for line in lines if line.startswith("Listen")]
        # Resets first, then nothing but a socket file.
        assert listens == ["ListenStream=", "ListenDatagram=", "ListenStream=/run/%n.config-invalid"]
        assert f"Description=echod sockets, closed: {config} is invalid (see: echod check-config)" in lines
    assert "port: missing" in capsys.readouterr().err


def test_installed_generator_script_runs(tmp_path):
    config = tmp_path / "echod.conf"
    config.write_text("[listener:echo]\nprotocol = echo\nport = 7\n")
    subprocess.run(
        [sys.executable, str(ROOT / "systemd" / "echod-socket-generator"), str(tmp_path / "out")],
        check=True,
        env={"ECHOD_CONFIG": str(config), "PYTHONPATH": str(ROOT)},
    )
    assert (tmp_path / "out" / "echod.socket.d" / "50-echod-conf.conf").exists()


def test_any_failure_to_read_the_config_also_closes_every_port(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ECHOD_CONFIG", str(tmp_path / "echod.conf"))

    def broken(path):
        raise RuntimeError("a broken installation")

    monkeypatch.setattr(generator, "load", broken)
    assert main([str(tmp_path / "normal")]) == 0
    text = (tmp_path / "normal" / "echod.socket.d" / "50-echod-conf.conf").read_text()
    listens = [line for line in text.splitlines() if line.startswith("Listen")]
    assert listens == ["ListenStream=", "ListenDatagram=", "ListenStream=/run/%n.config-invalid"]
    assert "RuntimeError('a broken installation')" in capsys.readouterr().err


def test_the_generator_and_check_config_do_not_import_twisted():
    # The generator runs at every daemon-reload, `echod check-config` at every start of the sockets.
    code = (
        "import sys, echod.systemd.generator, echod.cli; print([m for m in sys.modules if 'twisted.' in m])"
    )
    env = {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "[]"
