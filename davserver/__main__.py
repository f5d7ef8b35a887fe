import sys

from davserver.cli.main import main

sys.exit(main())
