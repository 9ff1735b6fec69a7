"""
tcp-echo and udp-echo (RFC 862), and their clients.

Modules by role: L{tcp} and L{udp} (the servers' protocols), L{client} (the
clients: sending, verifying, timing), L{tap} (twistd glue).
"""
