from airgap.cli import main

raise SystemExit(main())
