import sys

from vidgen.cli import main

sys.exit(main())
