"""
C{python -m netservices}: the same as the C{netservices} console command,
for when the script is not on C{PATH} (or not installed at all).
"""

from netservices.cli import main

if __name__ == "__main__":
    main()
