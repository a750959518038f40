import sys

from lmcontrol.cli.main import main

sys.exit(main())
