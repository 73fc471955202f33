import sys

from vien.cli.main import main

sys.exit(main())
