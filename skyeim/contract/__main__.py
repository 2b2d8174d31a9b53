import sys

from skyeim.contract.cli import main

sys.exit(main(sys.argv[1:]))
