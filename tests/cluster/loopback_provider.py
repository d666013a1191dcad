"""Ray's fake multi-node provider, each node it adds in a temp dir of its own.

Ray's autoscaling test cluster (``provider: {type: fake_multinode}``) starts each worker node
inside the autoscaler's process, in the head's session folder. Nodes sharing a session folder
unpack a submitted job's ``working_dir`` over each other (Ray extracts it once per node),
pulling the driver's working directory from under it. This provider gives each node its own
temp dir under ``$XDISTIL_TEST_NODE_DIRS``; everything else is Ray's.

    provider: {type: external, module: loopback_provider.LoopbackFakeProvider, ...}

with this folder on the head's ``PYTHONPATH`` (the autoscaler imports the module) and
``RAY_FAKE_CLUSTER=1`` in its environment. With ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` every
node it adds takes 127.0.0.1 as its address.
"""

import os
import tempfile
from unittest import mock

import ray._private.parameter
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider


class LoopbackFakeProvider(FakeMultiNodeProvider):
    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources,
                                               labels):
        real = ray._private.parameter.RayParams
        parent = os.environ["XDISTIL_TEST_NODE_DIRS"]

        def params(**kwargs):
            return real(temp_dir=tempfile.mkdtemp(prefix="n", dir=parent), **kwargs)

        # The parent builds the node's RayParams inline; only the temp dir is added.
        with mock.patch.object(ray._private.parameter, "RayParams", params):
            super()._create_node_with_resources_and_labels(node_config, tags, count, resources,
                                                           labels)
