from qwatch.cli import main

raise SystemExit(main())
