from p3dlab.classroom import main

raise SystemExit(main())
