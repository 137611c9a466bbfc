"""
The UDP echo on an installed system: turned on the way the shipped file
says, served on the socket systemd made from it, its receive buffer sized
by a reload.
"""

import re

from tests.system.container import Container
from tests.system.helpers import edit_config, journal, show, wait_for

APPLY_PORTS = "systemctl daemon-reload && systemctl restart echod.socket"
#: The shipped [listener:udp-echo] section, uncommented (its keys keep their shipped values).
UNCOMMENT_UDP = r"/^#\[listener:udp-echo\]$/,/^#receive_buffer =$/s/^#//"


def probed(c: Container, host: str) -> str:
    return c.run(["echod", "probe", "--udp", "-q", "-c", "5", "-i", "0.05", host], check=False).stdout


def test_the_shipped_udp_echo_turned_on_answers_on_ipv4_and_ipv6_with_its_buffer_sized_by_a_reload(
    installed: Container,
):
    c = installed
    text = edit_config(c, UNCOMMENT_UDP)
    assert "\n[listener:udp-echo]\n" in text and "\nreceive_buffer =\n" in text
    c.sh(APPLY_PORTS)
    drop_in = c.read("/run/systemd/generator/echod.socket.d/50-echod-conf.conf")
    assert "ListenDatagram=[::]:7\n" in drop_in
    for host in ("127.0.0.1", "::1"):
        wait_for(f"the UDP echo on {host}", lambda host=host: "5 answered intact" in probed(c, host))
    counted = re.compile(r"udp-echo (\d+) echoed, 0 dropped, receive buffer \w+")

    def both_probes_counted() -> bool:
        # Both probes' datagrams, and those of any probe tried before the listener was up.
        seen = counted.search(show(c, "echod.service", "StatusText"))
        return seen is not None and int(seen.group(1)) >= 10

    wait_for("the status line to count the echoes", both_probes_counted)
    # A reload sizes the buffer of systemd's socket, which stays open meanwhile.
    edit_config(c, "s/^receive_buffer =$/receive_buffer = 1M/")
    pid = show(c, "echod.service", "MainPID")
    c.sh("systemctl reload echod")
    cap = int(c.read("/proc/sys/net/core/rmem_max"))
    granted = 2 * min(1 << 20, cap)  # echod runs without CAP_NET_ADMIN: rmem_max caps it; the kernel doubles
    shown = (
        f"receive buffer {granted // 1024}K" if granted % (1 << 20) else f"receive buffer {granted >> 20}M"
    )
    wait_for("the new buffer in the status line", lambda: shown in show(c, "echod.service", "StatusText"))
    assert show(c, "echod.service", "MainPID") == pid
    assert "5 answered intact" in probed(c, "127.0.0.1")
    if cap < 1 << 20:
        assert "receive_buffer = 1M asked, the kernel gave" in journal(c, "-p", "warning")
