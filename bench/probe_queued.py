"""
`echod probe` with Twisted's own write(), which queues every probe until the next turn of the loop,
instead of sending it at once (echod/_twisted.py, send_at_once): what sending at once saves, measured by
`make bench` in the same run. Arguments as `echod probe`'s.
"""

import sys

from echod import cli
from echod.probe import channels


def queued(transport, data: bytes, direct: bool) -> None:
    transport.write(data)


channels.send_at_once = queued
sys.exit(cli.main(["probe", *sys.argv[1:]]))
