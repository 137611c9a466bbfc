# twistd application file for echod:  ECHOD_CONFIG=/etc/echod.conf twistd -ny echod.tac
# The configuration file is named by $ECHOD_CONFIG (default /etc/echod.conf); a bad
# one is reported line by line and twistd exits with status 78 (EX_CONFIG).
import os

from echod.cli import CONFIG_ENV, load_or_exit
from echod.config import DEFAULT_PATH
from echod.service import make_application

application = make_application(load_or_exit(os.environ.get(CONFIG_ENV, DEFAULT_PATH)))
