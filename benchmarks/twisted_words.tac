"""
Stock Twisted Words IRC server for benchmarks/chat.py:

    CHATBENCH_PORT=6667 twistd -n --pidfile= -y benchmarks/twisted_words.tac

twisted.words.service as shipped: InMemoryWordsRealm, IRCFactory, a Portal
with an in-memory password checker (users cb0 .. cb<CHATBENCH_USERS - 1> and
cbprobe, password "p": clients send PASS p before NICK), group "bench"
created up front.  (`twistd words --group` cannot be used: its option handler
calls .decode() on a str.)  Listens on 127.0.0.1 only; no flood control.
"""

import os

from twisted.application import internet, service
from twisted.cred import checkers, portal
from twisted.words import service as words

port = int(os.environ.get("CHATBENCH_PORT", "6667"))
users = int(os.environ.get("CHATBENCH_USERS", "20000"))

realm = words.InMemoryWordsRealm("bench.local")
realm.createGroupOnRequest = True
realm.addGroup(words.Group("bench"))
checker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
# IRCUser decodes the whole line, so the credentials it builds hold str
# (not bytes) usernames and passwords: the database must hold str too.
for i in range(users):
    checker.addUser(f"cb{i}", "p")
checker.addUser("cbprobe", "p")
factory = words.IRCFactory(realm, portal.Portal(realm, [checker]))

application = service.Application("twisted-words-bench")
internet.TCPServer(port, factory, interface="127.0.0.1").setServiceParent(application)
