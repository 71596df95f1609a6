import sys

from batchq.cli.main import main

sys.exit(main())
