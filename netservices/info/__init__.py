"""
tcp-info and udp-info: tell clients the address and port they were seen
from.

Modules by role: L{wire} (the answer's formats), L{stun} (STUN Binding),
L{tcp}, L{udp} and L{http} (the protocols), L{client} (the client side) and
L{tap} (twistd glue).
"""
