"""
threaded: blocking Python functions served concurrently over the network,
on a bounded thread pool, and its client.

Modules by role: L{wire} (the line protocol: requests and replies, lines
split with a bound), L{pool} (the bounded pool service: queue bound, request
timeouts, stuck threads, statistics, reactor lag, graceful stop),
L{handlers} (the built-in handlers and loading the user's), L{protocol}
(the server's protocol: pipelined requests, replies by id, per-client
limit, request logs), L{client} (one request, and the load mode), L{tap}
(twistd glue).
"""
