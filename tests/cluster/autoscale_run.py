"""Runs the pipeline on Ray's autoscaling test cluster, from zero workers, and reports which
node types the autoscaler added (a JSON line starting with `{"added"`).

    python tests/cluster/autoscale_run.py CONFIG key=value ...

Its own process: the cluster's start runs `ray stop --force`, and its driver must not share a
process with another Ray.
"""

import json
import os
import sys
import threading
import time

import yaml
from ray.cluster_utils import AutoscalingCluster

HERE = os.path.dirname(os.path.abspath(__file__))
TYPE_MARKERS = ("cpu_node", "teacher_gpu", "train_gpu")


class ProjectAutoscalingCluster(AutoscalingCluster):
    """AutoscalingCluster on the project's fake-provider config (the wheel lacks Ray's own)."""

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False,
                         **config_kwargs):
        with open(os.path.join(HERE, "fake_provider.yaml")) as f:
            config = yaml.safe_load(f)
        config["available_node_types"]["ray.head.default"] = {
            "resources": head_resources, "node_config": {}, "max_workers": 0}
        config.update(config_kwargs)
        return config


def main(config: str, overrides: list[str]) -> None:
    import ray

    with open(os.path.join(HERE, "fake_provider.yaml")) as f:
        node_types = yaml.safe_load(f)["available_node_types"]
    from xdistil_ray.pipeline import apply_ray_env

    apply_ray_env(local=False)  # the nodes' processes inherit it, as a job's would
    cluster = ProjectAutoscalingCluster(head_resources={"CPU": 0}, worker_node_types=node_types)
    cluster.start()
    seen: dict[str, int] = {}
    done = threading.Event()
    try:
        ray.init(address="auto")
        print(f"[autoscale] nodes at start: {len(ray.nodes())}", flush=True)

        def watch():
            while not done.is_set():
                for node in ray.nodes():
                    if node["Alive"]:
                        for marker in TYPE_MARKERS:
                            if marker in node["Resources"]:
                                seen[node["NodeID"]] = marker
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        from xdistil_ray import pipeline
        from xdistil_ray.config import load_config

        started = time.time()
        report = pipeline.run(load_config(config, overrides + ["ray.address=auto"]))
        done.set()
        watcher.join()
        added: dict[str, int] = {}
        for marker in seen.values():
            added[marker] = added.get(marker, 0) + 1
        print(json.dumps({"added": added, "seconds": round(time.time() - started, 1),
                          "agreement": report["eval"]["agreement"]}), flush=True)
    finally:
        done.set()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
