import sys

from vien_tools.cli.main import main

sys.exit(main())
