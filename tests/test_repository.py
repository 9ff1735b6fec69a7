"""
Checks on the repository itself: what CI runs is what the README says.
"""

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


class QuickStartTests(SynchronousTestCase):
    """
    The README's quick start and CI agree.
    """

    def readmeCommands(self) -> list[str]:
        """
        @return: the two commands of the README's quick start.
        """
        text = (ROOT / "README.md").read_text()
        quickStart = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
        return re.findall(r"```sh\n(.+?)\n```", quickStart)

    def test_twoCommands(self):
        """
        The quick start has one command that installs and runs the main
        service and one that installs and runs the tests.
        """
        run, test = self.readmeCommands()
        self.assertIn("pip install .", run)
        self.assertIn("twistd -n netservices", run)
        self.assertIn("pip install", test)
        self.assertIn("pytest", test)

    def test_ciRunsTheReadmeTestCommand(self):
        """
        The last command of C{.ci/run} is exactly the README's test command.
        """
        _, test = self.readmeCommands()
        lines = [
            line
            for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        self.assertEqual(lines[-1], test)
