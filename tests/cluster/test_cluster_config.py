"""The cluster settings are validated like every other key, and nothing imports Ray unless asked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.core.config import Config, ConfigError
from app.core.models import default_specs
from tests.support import REPO

NAMES = default_specs().names


@pytest.mark.parametrize("kwargs, message", [
    ({"inference_backend": "gpu"}, "inference_backend must be"),
    ({"inference_backend": "ray"}, "needs ray_address"),
    ({"ray_address": "headnode"}, "ray_address must be host:port"),
    ({"cluster_replicas": {"chexnet": 0}}, "cluster_replicas.chexnet must be a whole number >= 1"),
    ({"cluster_cpus": {"nope": 1}}, "unknown model 'nope'"),
    ({"cluster_call_deadline_s": 0}, "cluster_call_deadline_s must be between"),
    ({"ae_priority": {"ED_CT": "urgent"}}, "ae_priority.ED_CT must be"),
])
def test_bad_cluster_settings_stop_start_up_with_one_sentence(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(**kwargs).validate(NAMES)


def test_good_cluster_settings_pass() -> None:
    Config(inference_backend="ray", ray_address="10.0.0.5:6379", cluster_replicas={"blast-ct": 8},
           cluster_cpus={"blast-ct": 2, "chexnet": 0.5}, ae_priority={"ED_CT": "high"}).validate(NAMES)


def test_the_service_the_cli_and_the_cluster_client_import_no_ray() -> None:
    code = ("import sys, app.cli, app.service, app.commands.analyze_files, app.cluster.backend; "
            "sys.exit(1 if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
