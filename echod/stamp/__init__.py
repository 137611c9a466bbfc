"""
STAMP, the Simple Two-way Active Measurement Protocol (RFC 8762, with the
optional extensions of RFC 8972): its test packets as values, without I/O.

Shared by the reflector and the sender (C{echod probe --stamp}), which import
nothing else of each other: C{timestamps} (NTP and PTPv2 formats from and to
nanoseconds of CLOCK_REALTIME), C{estimate} (the Error Estimate), C{tlv} (the
TLV format and its faults), C{tlvtypes} (the eight types RFC 8972 defines),
C{packets} (the unauthenticated sender and reflector packets), C{reflection}
(a reflector's answer to a request) and C{clock} (the kernel's view of the
clock, for an honest Error Estimate: the one module here that asks the kernel).
"""
