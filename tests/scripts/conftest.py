"""The scripts under scripts/ are run as programs; these tests also import them as modules."""

import sys

from pipeline.settings import PROJECT_ROOT

SCRIPTS = PROJECT_ROOT / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
