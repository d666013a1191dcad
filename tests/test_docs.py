"""The documentation that is generated stays in step with the code it is generated from."""

import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_the_configuration_reference_is_current():
    """docs/configuration.md is written from xdistil_ray/config/__init__.py's field docstrings: a field
    added, removed, renamed, re-defaulted or re-documented without running
    scripts/config_reference.py fails here."""
    result = subprocess.run([sys.executable, "scripts/config_reference.py", "--check"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_config_field_is_documented():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import config_reference
    finally:
        sys.path.pop(0)
    from xdistil_ray.config import Config
    from xdistil_ray.config import FinetuneJob

    missing = [path for cfg in (Config(), FinetuneJob())
               for path, _, doc in config_reference.rows(cfg) if not doc]
    assert missing == []


def test_the_readme_links_to_pages_that_exist():
    import re

    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    links = re.findall(r"\]\((docs/[^)]+)\)", text)
    assert len(links) >= 10
    assert [link for link in links
            if not os.path.exists(os.path.join(ROOT, link.split("#")[0]))] == []
    for link in links:  # a section named after '#': one of the page's headings, as GitHub links it
        page, _, anchor = link.partition("#")
        if anchor:
            headings = re.findall(r"^#+ (.+)$", open(os.path.join(ROOT, page), encoding="utf-8")
                                  .read(), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in headings}
            assert anchor in slugs, (link, sorted(slugs))
