"""
The echo services on the wire: RFC 862 echo, bytecount, the PROXY header, the connection
limits that wrap them, the UDP echo. Nothing here knows of systemd, the metrics, the daemon or the probe.
"""
