"""
The glue to systemd: socket activation, sd_notify, the socket generator, sockets nobody
claimed. Nothing here knows of echo.
"""
