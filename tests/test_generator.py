import subprocess
import sys
from pathlib import Path

from echod.config import parse
from echod.generator import main, socket_drop_in

ROOT = Path(__file__).resolve().parent.parent


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
