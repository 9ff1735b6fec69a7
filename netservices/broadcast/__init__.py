"""
broadcast: peers on one LAN where what any peer sends, every other peer and
the server receive - exactly once, without storms, spoofing or loops.

Modules by role: L{wire} (the message format: peer id, sequence number,
kind, max-age, optional HMAC; its total parser and replay checks),
L{peers} (the pure peer table: expiry, duplicate and own-message drop),
L{protocol} (the peer: sockets by interface index, TTL 255, the receive
checks), L{client} (C{netservices broadcast}), L{wol} (C{netservices
wol}), L{tap} (twistd glue for C{twistd netservices broadcast}).
"""
