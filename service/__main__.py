"""``python -m service`` is the ``mlledger`` command."""

from service.cli import main

main()
