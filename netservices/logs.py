# -*- test-case-name: tests.test_logs -*-
"""
Log observers for running the services under C{twistd}.

C{twist} has C{--log-format=json} built in; C{twistd} takes the name of an
observer factory instead::

    twistd -n --logger=netservices.logs.jsonLines netservices tcp-info

writes one JSON object per line to standard output, with every structured
field of each event (C{peer}, C{port}, C{reason}, ...).
"""

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def jsonLines() -> ILogObserver:
    """
    @return: an observer writing each event as one line of JSON to standard
        output; a factory for C{twistd --logger}.
    """
    return jsonFileLogObserver(sys.stdout, recordSeparator="")
