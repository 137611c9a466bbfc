"""
`echod probe`, the client end: the run, its channels, payloads, tally, options and output.
It imports nothing of the daemon.
"""
