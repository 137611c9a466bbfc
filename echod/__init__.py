"""echod: RFC 862 echo and length-prefixed "bytecount" echo on Twisted."""

__version__ = "0.2.0"
