# twistd application file for echod:  ECHOD_CONFIG=/etc/echod.conf twistd -ny echod.tac
# The configuration file is named by $ECHOD_CONFIG (default /etc/echod.conf); a bad
# one is reported line by line and twistd exits with status 78 (EX_CONFIG).
import os
import sys

try:
    import echod  # noqa: F401
except ImportError:
    # Run from a source checkout (twistd -ny echod/echod.tac): the package is beside this file.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from echod.cli import CONFIG_ENV, load_or_exit  # noqa: E402
from echod.config import DEFAULT_PATH  # noqa: E402
from echod.instances import instance_name  # noqa: E402
from echod.daemon.service import make_application  # noqa: E402

# echod@N.service names its instance in $ECHOD_INSTANCE: it serves its metrics at their port + N.
application = make_application(load_or_exit(os.environ.get(CONFIG_ENV, DEFAULT_PATH), instance_name()))
