from imgbuild.cli import main

raise SystemExit(main())
