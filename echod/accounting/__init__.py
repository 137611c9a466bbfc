"""
What echod counts and tells about its traffic: counters, throttled warnings, the access log,
the alerts of the status line, running out of file descriptors. Imports only the leaves and
_twisted (for the log of a TCP port, which tells of descriptors running out).
"""
