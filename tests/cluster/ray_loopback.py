"""`ray ...` (the CLI) for a multi-node Ray cluster on one machine, every listener on loopback.

Run it with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment: then every Ray process
(raylet, GCS, dashboard agents, workers) takes 127.0.0.1 as its node address and binds there.
That setting also makes ``ray start --address`` refuse to add a node, so this wrapper lifts that
one check for its own process (and keeps the node address on loopback):

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 python tests/cluster/ray_loopback.py start --address=...
"""

import sys

import ray._private.ray_constants as ray_constants
import ray._private.services as services


def _loopback(address=None):
    return "127.0.0.1"


if __name__ == "__main__":
    from ray.scripts.scripts import main

    ray_constants.ENABLE_RAY_CLUSTER = True  # the worker-node check in `ray start`
    services.get_node_ip_address = _loopback
    services.node_ip_address_from_perspective = _loopback
    sys.argv[0] = "ray"
    sys.exit(main())
