from hardbatch.cli import main

raise SystemExit(main())
