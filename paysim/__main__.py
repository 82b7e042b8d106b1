from paysim.cli import main

raise SystemExit(main())
