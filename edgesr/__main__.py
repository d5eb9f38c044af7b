from edgesr.cli import main

raise SystemExit(main())
