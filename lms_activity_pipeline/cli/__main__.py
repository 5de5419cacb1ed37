"""``python -m lms_activity_pipeline.cli`` is ``lms-activity``."""

from lms_activity_pipeline.cli import main

raise SystemExit(main())
