"""
echod@N instances: where each one serves its metrics.

All instances read the same /etc/echod.conf, and share its listeners' ports
through SO_REUSEPORT; the metrics port cannot be shared that way (a scrape
must reach one instance, not whichever the kernel picks), so echod@N serves
its metrics at the configured address and port plus N: echod.service at
127.0.0.1:9207, echod@1 at 9208, echod@2 at 9209. The unit passes the
instance name (C{%i}) in L{INSTANCE_ENV}.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from echod.addresses import host_port

#: The environment variable echod@.service sets to the instance name (%i).
INSTANCE_ENV = "ECHOD_INSTANCE"


def instance_name(environ: Mapping[str, str] = os.environ) -> str | None:
    """The instance this process is (the text after echod@), or C{None} for echod.service."""
    return environ.get(INSTANCE_ENV) or None


def instance_metrics(metrics: tuple[str, int], instance: str) -> tuple[str, int]:
    """
    Where instance C{instance} serves the metrics configured at C{metrics}:
    the same address, the port plus the instance's number (port 0, any free
    port, stays 0).

    @raise ValueError: if the instance is not a number, or the port would be past 65535.
    """
    address, port = metrics
    configured = host_port(address, port)
    if not (instance.isascii() and instance.isdigit()) or str(int(instance)) != instance:
        raise ValueError(
            f"echod@{instance} cannot serve metrics: an instance serves them at the port of "
            f"metrics = {configured} plus its number, so with metrics on, instances are numbered "
            "(echod@1, echod@2, ...); run numbered instances, or leave metrics empty"
        )
    if port == 0:
        return address, 0
    if port + int(instance) > 65535:
        raise ValueError(
            f"echod@{instance} would serve its metrics on port {port} + {instance} = {port + int(instance)}, "
            f"past 65535; give metrics a port below {65536 - int(instance)}"
        )
    return address, port + int(instance)
