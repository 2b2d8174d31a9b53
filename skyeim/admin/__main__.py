"""python -m skyeim.admin: see skyeim/admin/__init__.py."""
import sys

from skyeim.admin import main

sys.exit(main())
