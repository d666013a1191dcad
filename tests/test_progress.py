import pytest

from xdistil_ray.observe.progress import Throughput, counted


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throughput_lines_are_rate_limited_and_show_rate_and_time_left():
    clock = Clock()
    t = Throughput("teacher", total=1000, every_s=10, clock=clock)
    clock.now += 2
    assert t.add(100) is None  # not due yet
    clock.now += 8
    assert t.add(100) == "[xdistil] teacher: 200/1,000 (20%) rows, 20 rows/s, ~40s left"
    clock.now += 1
    assert t.add(100) is None
    clock.now += 39
    assert t.add(700).startswith("[xdistil] teacher: 1,000/1,000 (100%) rows, 20 rows/s")


def test_throughput_without_total():
    clock = Clock()
    t = Throughput("data: corpus read and cleaned", every_s=5, clock=clock)
    clock.now += 5
    assert t.add(4096) == "[xdistil] data: corpus read and cleaned: 4,096 rows, 819 rows/s"


def test_counted_passes_the_batch_through_and_reports_its_rows():
    calls = []

    class Handle:
        class add:
            @staticmethod
            def remote(label, rows):
                calls.append((label, rows))

    out = counted({"text": ["a", "b", "c"]}, fn=lambda b, suffix: {"text": [x + suffix
                                                                            for x in b["text"]]},
                  progress=Handle, label="x", suffix="!")
    assert out == {"text": ["a!", "b!", "c!"]} and calls == [("x", 3)]


@pytest.mark.integration
def test_rows_and_shards_reach_rays_prometheus_endpoint(ray_local):
    """Rows counted in an actor (as the progress and shard-ledger actors count them) are on the
    node's metrics endpoint, which Prometheus and the dashboard scrape."""
    import time
    import urllib.request

    import ray

    @ray.remote(num_cpus=0)
    class Counting:
        def count(self):
            from xdistil_ray.observe import ray_metrics
            from xdistil_ray.observe.progress import Throughput

            Throughput("metrics-test", 100).add(40)
            ray_metrics.shard_committed("teacher")

    actor = Counting.remote()
    ray.get(actor.count.remote())
    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:  # exported every few seconds
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if 'ray_xdistil_rows_total{' in text and 'step="metrics-test"' in text:
            break
        time.sleep(2)
    rows = [line for line in text.splitlines()
            if line.startswith("ray_xdistil_rows_total{") and 'step="metrics-test"' in line]
    assert rows and rows[0].rsplit(" ", 1)[1] == "40.0", rows
    assert any(line.startswith("ray_xdistil_shards_committed_total{") for line in text.splitlines())
    assert any(line.startswith("ray_xdistil_rows_per_second{") for line in text.splitlines())
    ray.kill(actor)
