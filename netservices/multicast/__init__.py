"""
multicast: a node that joins groups and counts what arrives, and the tools
to send, receive and ping (C{netservices mcast send|recv|ping}).

Modules by role: L{groups} (the C{--group} grammar), L{wire} (the datagram
header, HMAC and replay window), L{stats} (per-stream loss, duplicates,
reordering, jitter), L{protocol} (the node's protocol), L{client} (the
tools), L{tap} (twistd glue).  The sockets are
L{netservices._common.multicast}.
"""
