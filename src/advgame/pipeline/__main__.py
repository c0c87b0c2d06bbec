"""`python -m advgame.pipeline`: regenerate dvc.yaml from params.yaml (make pipeline)."""
from advgame.pipeline.generator import main

raise SystemExit(main())
