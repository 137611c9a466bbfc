from dataclasses import replace

from echod.config import parse
from echod.daemon.reload import Plan, Running, plan, same_socket

BASE = parse("[listener:x]\nprotocol = echo\naddress = 127.0.0.1\nport = 7000\n").listeners[0]


def listener(name: str, port: int, **changes) -> object:
    return replace(BASE, name=name, port=port, **changes)


def running(name: str, port: int, bound: int | None = None, inherited: bool = False, **changes) -> Running:
    return Running(name, listener(name, port, **changes), bound if bound is not None else port, inherited)


def test_nothing_changed_keeps_every_listener_as_it_is():
    now = [running("echo", 7000), running("bc", 7001, protocol="bytecount")]
    result = plan(now, [r.settings for r in now])
    assert result == Plan(keep=(("echo", now[0].settings), ("bc", now[1].settings)))
    assert result.renames == ()


def test_a_renamed_listener_keeps_its_socket():
    new = listener("echo2", 7000)
    result = plan([running("echo", 7000)], [new])
    assert result == Plan(keep=(("echo", new),))
    assert result.renames == (("echo", "echo2"),)


def test_swapped_names_keep_both_sockets():
    a, b = listener("a", 7001, protocol="bytecount"), listener("b", 7000)
    result = plan([running("a", 7000), running("b", 7001, protocol="bytecount")], [a, b])
    assert result == Plan(keep=(("b", a), ("a", b)))
    assert result.renames == (("b", "a"), ("a", "b"))


def test_a_protocol_switch_on_the_same_socket_is_kept():
    new = listener("svc", 7000, protocol="bytecount")
    assert plan([running("svc", 7000)], [new]) == Plan(keep=(("svc", new),))


def test_port_zero_matches_the_port_it_got_or_zero_again():
    now = running("a", 0, bound=40000)
    assert same_socket(now, listener("b", 0))
    assert same_socket(now, listener("b", 40000))
    assert not same_socket(now, listener("b", 40001))
    assert plan([now], [listener("b", 40000)]).renames == (("a", "b"),)


def test_transport_and_address_are_part_of_the_socket():
    now = running("echo", 7000)
    assert not same_socket(now, listener("echo", 7000, transport="udp"))
    assert not same_socket(now, listener("echo", 7000, address="::1"))


def test_the_same_name_wins_among_sockets_alike():
    now = [running("a", 0, bound=40000), running("b", 0, bound=40001)]
    b, a = listener("b", 0), listener("a", 0)
    assert plan(now, [b, a]) == Plan(keep=(("b", b), ("a", a)))


def test_a_listener_moved_to_another_port_binds_anew_unless_systemd_holds_its_socket():
    new = listener("echo", 7005)
    assert plan([running("echo", 7000)], [new]) == Plan(move=(("echo", new),))
    assert plan([running("echo", 7000, inherited=True)], [new]) == Plan(pin=(("echo", new),))


def test_the_socket_goes_to_its_new_name_and_the_old_name_starts_afresh():
    renamed, moved_name = listener("echo2", 7000), listener("echo", 7005)
    assert plan([running("echo", 7000)], [renamed, moved_name]) == Plan(
        keep=(("echo", renamed),), add=(moved_name,)
    )


def test_listeners_left_over_are_added_or_removed():
    new = listener("new", 7009)
    assert plan([running("old", 7000)], [new]) == Plan(add=(new,), remove=("old",))
