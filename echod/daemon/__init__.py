"""
The running daemon: the service tree, reloads, listeners, the status line, logs, memory and
signals. Only the command line and echod.tac import it.
"""
