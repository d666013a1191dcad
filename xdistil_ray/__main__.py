"""``python -m xdistil_ray [distill|finetune] ...`` (see xdistil_ray.pipelines.commands)."""

import sys

from xdistil_ray.pipelines.commands import main

sys.exit(main())
