from lvsmon.cli import main

raise SystemExit(main())
