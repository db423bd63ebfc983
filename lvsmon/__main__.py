from lvsmon.cli.dispatch import main

raise SystemExit(main())
