from netns_lab.cli import main

raise SystemExit(main())
