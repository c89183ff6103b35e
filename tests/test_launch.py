"""The launch files (Ray cluster launcher, SLURM, KubeRay) parse and carry what their tools require."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
CLUSTER_YAML = LAUNCH / "cluster" / "ray-cluster.yaml"
SBATCH = LAUNCH / "slurm" / "search.sbatch"
RAYCLUSTER = LAUNCH / "kuberay" / "raycluster.yaml"
RAYJOB = LAUNCH / "kuberay" / "rayjob.yaml"
RAYJOB_PROMOTE = LAUNCH / "kuberay" / "rayjob-promote.yaml"
README = LAUNCH / "README.md"


def _jsonschema() -> Any:
    import jsonschema  # in the dev extra

    return jsonschema


def _documents(path: Path) -> list[dict]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def _one(path: Path, kind: str) -> dict:
    found = [doc for doc in _documents(path) if doc.get("kind") == kind]
    assert len(found) == 1, f"{path} should hold exactly one {kind}, found {len(found)}"
    return found[0]


# --------------------------------------------------------------------------------------------------------------
# Ray cluster launcher


@pytest.fixture(scope="module")
def cluster() -> dict:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(config, dict)
    return config


def _gpu_worker_types(config: dict) -> list[str]:
    return [
        name
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"] and node_type.get("resources", {}).get("GPU", 0) > 0
    ]


def test_cluster_yaml_has_the_keys_ray_up_needs(cluster: dict) -> None:
    assert isinstance(cluster["cluster_name"], str) and cluster["cluster_name"]
    assert cluster["provider"]["type"] == "aws"
    assert cluster["provider"]["region"]
    types = cluster["available_node_types"]
    assert isinstance(types, dict) and len(types) >= 2
    assert cluster["head_node_type"] in types, "head_node_type must name one of available_node_types"
    for name, node_type in types.items():
        assert "node_config" in node_type and "resources" in node_type, name
        assert node_type["node_config"].get("InstanceType"), name


def test_cluster_yaml_has_a_cpu_head_and_a_gpu_worker(cluster: dict) -> None:
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU", 0) == 0, "no trial should be scheduled on the head"
    workers = _gpu_worker_types(cluster)
    assert workers, "a worker node type with resources.GPU > 0 is required"
    for name in workers:
        worker = types[name]
        assert 0 <= worker.get("min_workers", 0) <= worker["max_workers"], name
        assert worker["max_workers"] > 0, name
        assert worker["max_workers"] <= cluster["max_workers"], name
    assert sum(t.get("min_workers", 0) for t in types.values()) <= cluster["max_workers"]


def test_cluster_yaml_starts_ray_and_installs_the_project(cluster: dict) -> None:
    head_start = "\n".join(cluster["head_start_ray_commands"])
    worker_start = "\n".join(cluster["worker_start_ray_commands"])
    assert "ray stop" in cluster["head_start_ray_commands"][0]
    assert re.search(r"ray start --head\b.*--port=6379", head_start)
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker_start
    assert "--head" not in worker_start
    mounts = cluster["file_mounts"]
    assert any(Path(remote).name == "spinenet-seg-nas" and local == "." for remote, local in mounts.items())
    setup = "\n".join(cluster["setup_commands"])
    assert re.search(r"pip install\b.*-e ~/spinenet-seg-nas", setup)
    assert "/mnt/shared" in setup, "the shared run directory must be mounted on every node"
    assert "boto3" in "\n".join(cluster["head_setup_commands"]), "the AWS autoscaler on the head needs boto3"


def _ray_schema_path() -> Path:
    spec = importlib.util.find_spec("ray")  # a dependency of the project
    path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    assert path.is_file(), f"this ray does not ship {path.name}"
    return path


def test_cluster_yaml_matches_rays_autoscaler_schema(cluster: dict) -> None:
    schema = json.loads(_ray_schema_path().read_text())
    jsonschema = _jsonschema()
    jsonschema.validate(cluster, schema)
    # The schema is strict enough to catch a typical mistake: fractional GPUs on a node type.
    broken = copy.deepcopy(cluster)
    broken["available_node_types"][_gpu_worker_types(cluster)[0]]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_cluster_yaml_passes_rays_own_validation(cluster: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    _jsonschema()  # validate_config needs it
    validate_config(prepare_config(copy.deepcopy(cluster)))  # fills the AWS defaults; no cloud access
    broken = copy.deepcopy(cluster)
    broken["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        validate_config(prepare_config(broken))


# --------------------------------------------------------------------------------------------------------------
# SLURM


def _bash() -> str:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    major = subprocess.run([bash, "-c", "echo ${BASH_VERSINFO[0]}"], capture_output=True, text=True, check=False)
    if int(major.stdout.strip() or 0) < 4:
        pytest.skip("the SLURM script needs bash >= 4 (mapfile), as on SLURM clusters")
    return bash


def _joined(text: str) -> str:
    return re.sub(r"\\\n\s*", " ", text)  # continuation lines as one line


def test_sbatch_is_valid_bash() -> None:
    result = subprocess.run([_bash(), "-n", str(SBATCH)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_sbatch_directives() -> None:
    lines = SBATCH.read_text().splitlines()
    assert lines[0].startswith("#!") and "bash" in lines[0]
    # sbatch stops reading #SBATCH lines at the first command.
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [line.split(None, 1)[1].strip() for line in lines if line.startswith("#SBATCH")]
    late = [i for i, line in enumerate(lines) if line.startswith("#SBATCH") and i > first_command]
    assert not late, f"#SBATCH lines after the first command are ignored by sbatch: {late}"
    options = dict(d.split("=", 1) if "=" in d else (d, "") for d in directives)
    assert int(options["--nodes"]) >= 1
    gpus = [
        value
        for key, value in options.items()
        if key in {"--gpus", "--gpus-per-node", "--gpus-per-task"} or (key == "--gres" and "gpu" in value)
    ]
    assert gpus, "a GPU request (--gpus*, --gres=gpu:N) is required"
    assert int(gpus[0].rsplit(":", 1)[-1]) > 0
    assert int(options["--cpus-per-task"]) > 0
    assert re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}", options["--time"])
    assert options.get("--ntasks-per-node") == "1", "one Ray node per SLURM node"
    assert "--requeue" in options


def test_sbatch_starts_ray_and_runs_the_search() -> None:
    text = _joined(SBATCH.read_text())
    assert "set -euo pipefail" in text
    assert re.search(r"srun [^\n]*ray start --head [^\n]*--num-cpus=\S+ [^\n]*--num-gpus=\S+ [^\n]*--block", text)
    assert re.search(r"srun [^\n]*--exclude=\"\$head_node\"[^\n]*ray start --address=[^\n]*--block", text)
    assert "$SLURM_CPUS_PER_TASK" in text or "${SLURM_CPUS_PER_TASK" in text
    assert "SLURM_GPUS" in text
    assert re.search(r'nas search --config "\$CONFIG" --out "\$RUN_DIR" --address "\$address"', text)
    assert 'address="$head_ip:$port"' in text
    assert re.search(r"CONFIG=\"\$\{CONFIG:-", text) and re.search(r"RUN_DIR=\"\$\{RUN_DIR:-", text)
    assert "ray stop" in text


def _executable(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_slurm(tmp_path: Path) -> dict[str, Any]:
    """A two-node 'allocation': srun runs its command here; ray, nas, scontrol and hostname only log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "log"
    log.touch()
    _executable(bin_dir / "scontrol", "echo n1\necho n2\n")
    _executable(bin_dir / "hostname", 'echo "10.0.0.1 fe80::1"\n')
    _executable(
        bin_dir / "srun",
        'echo "srun $*" >>"$LOG"\n'
        'while [[ $# -gt 0 && "$1" == -* ]]; do\n'
        '    if [[ "$1" == -w ]]; then shift 2; else shift; fi\n'
        "done\n"
        'exec "$@"\n',
    )
    _executable(
        bin_dir / "ray",
        'echo "ray $*" >>"$LOG"\n'
        'if [[ " $* " == *" --block "* ]]; then\n'
        "    sleep 60 &\n"
        "    child=$!\n"
        '    trap \'kill "$child"; echo ray-terminated >>"$LOG"; exit 0\' TERM\n'
        '    wait "$child"\n'
        "fi\n",
    )
    # The node count the script polls for: the Ray nodes started so far.
    _executable(bin_dir / "fake-python", 'echo "poll ${*: -1}" >>"$LOG"\ngrep -c "^ray start" "$LOG" || true\n')
    _executable(bin_dir / "nas", 'echo "nas $*" >>"$LOG"\nexit "${NAS_RC:-0}"\n')
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path),
        "LOG": str(log),
        "PYTHON": str(bin_dir / "fake-python"),
        "VENV": str(tmp_path / "no-venv"),
        "SLURM_JOB_NODELIST": "n[1-2]",
        "SLURM_JOB_NAME": "nas-test",
        "SLURM_CPUS_PER_TASK": "8",
        "SLURM_GPUS_PER_TASK": "a100:4",
        "CONFIG": "cfg.yaml",
        "RUN_DIR": str(tmp_path / "shared" / "run"),
        "NAS_ARGS": "--strategy tpe --trials 7",
        "RAY_WAIT_S": "20",
        "RAY_POLL_S": "0.1",
    }
    return {"env": env, "log": log, "run_dir": Path(env["RUN_DIR"])}


def _run_sbatch(fake: dict[str, Any], **extra: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    result = subprocess.run(
        [_bash(), str(SBATCH)],
        env={**fake["env"], **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, fake["log"].read_text().splitlines()


def _index(lines: list[str], prefix: str) -> int:
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"expected one line starting with {prefix!r} in:\n" + "\n".join(lines)
    return hits[0]


def _srun_step(lines: list[str], command: str) -> list[str]:
    steps = [line.split() for line in lines if line.startswith("srun ") and command in line]
    assert len(steps) == 1, f"expected one srun step running {command!r} in:\n" + "\n".join(lines)
    return steps[0]


@pytest.mark.parametrize("run_dir_state", ["absent", "empty", "holds-a-search"])
def test_sbatch_runs_head_workers_search_and_stops_ray(fake_slurm: dict[str, Any], run_dir_state: str) -> None:
    if run_dir_state != "absent":
        fake_slurm["run_dir"].mkdir(parents=True)
    if run_dir_state == "holds-a-search":
        (fake_slurm["run_dir"] / "config.yaml").write_text("name: earlier\n")
    resume = run_dir_state == "holds-a-search"
    result, lines = _run_sbatch(fake_slurm, PROMOTE_TOP="2", PROMOTE_WORKERS="8")
    assert result.returncode == 0, result.stdout + result.stderr
    head = _index(lines, "ray start --head")
    assert lines[head] == "ray start --head --node-ip-address=10.0.0.1 --port=6379 --num-cpus=8 --num-gpus=4 --block"
    head_step = _srun_step(lines, "ray start --head")
    assert head_step[:5] == ["srun", "--nodes=1", "--ntasks=1", "-w", "n1"]
    assert {"--cpus-per-task=8", "--gpus-per-task=4"} <= set(head_step), "srun must ask for the node's resources"
    assert head_step[head_step.index("ray") :][:3] == ["ray", "start", "--head"]
    worker = _index(lines, "ray start --address")
    assert lines[worker] == "ray start --address=10.0.0.1:6379 --num-cpus=8 --num-gpus=4 --block"
    worker_step = _srun_step(lines, "ray start --address")
    assert worker_step[:4] == ["srun", "--nodes=1", "--ntasks=1", "--exclude=n1"]
    assert {"--cpus-per-task=8", "--gpus-per-task=4"} <= set(worker_step)
    assert worker_step[worker_step.index("ray") :][:3] == ["ray", "start", "--address=10.0.0.1:6379"]
    assert head < worker, "workers start once the head is up"
    assert any(line == "poll 10.0.0.1:6379" for line in lines)
    search = _index(lines, "nas search")
    expected = f"nas search --config cfg.yaml --out {fake_slurm['run_dir']} --address 10.0.0.1:6379"
    expected += " --resume" if resume else ""
    assert lines[search] == expected + " --strategy tpe --trials 7"
    assert worker < search
    promote = _index(lines, "nas promote")
    promoted = f"nas promote {fake_slurm['run_dir']} --top 2 --fidelity full --address 10.0.0.1:6379 --workers 8"
    assert lines[promote] == promoted
    assert lines.count("ray-terminated") == 2, "both `ray start --block` steps are stopped"
    assert _index(lines, "ray stop") > promote
    token = _index(lines, "ray get-auth-token --generate")
    assert token < head, "the token exists before the first node starts (the fake HOME has none)"


def test_sbatch_stops_ray_and_keeps_the_exit_status_when_the_search_fails(fake_slurm: dict[str, Any]) -> None:
    result, lines = _run_sbatch(fake_slurm, NAS_RC="3", PROMOTE_TOP="2")
    assert result.returncode == 3
    assert not any(line.startswith("nas promote") for line in lines)
    assert lines.count("ray-terminated") == 2
    assert _index(lines, "ray stop") > _index(lines, "nas search")


def test_sbatch_gives_up_when_the_workers_do_not_join(fake_slurm: dict[str, Any]) -> None:
    # Only the head comes up: the poll never sees two nodes.
    _executable(Path(fake_slurm["env"]["PYTHON"]), "echo 1\n")
    result, lines = _run_sbatch(fake_slurm, RAY_WAIT_S="1")
    assert result.returncode != 0
    assert "only 1 of 2 Ray node(s) up" in result.stderr
    assert not any(line.startswith("nas ") for line in lines)
    assert lines.count("ray-terminated") == 2


# --------------------------------------------------------------------------------------------------------------
# KubeRay

_DNS_1035 = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
_QUANTITIES = {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "image"],
                        "properties": {
                            "name": {"type": "string", "pattern": _DNS_1035},
                            "image": {"type": "string", "minLength": 1},
                            "resources": {
                                "type": "object",
                                "properties": {"limits": _QUANTITIES, "requests": _QUANTITIES},
                                "additionalProperties": False,
                            },
                            "volumeMounts": {
                                "type": "array",
                                "items": {"type": "object", "required": ["name", "mountPath"]},
                            },
                        },
                    },
                },
                "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            },
        }
    },
}
# KubeRay keeps rayStartParams as map[string]string: a bare number or boolean is rejected by the API server.
_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
_REPLICAS = {"type": "integer", "minimum": 0}
_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "headGroupSpec": {
            "type": "object",
            "required": ["rayStartParams", "template"],
            "properties": {"rayStartParams": _START_PARAMS, "template": _POD_TEMPLATE},
        },
        "workerGroupSpecs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"],
                "properties": {
                    "groupName": {"type": "string", "minLength": 1},
                    "replicas": _REPLICAS,
                    "minReplicas": _REPLICAS,
                    "maxReplicas": _REPLICAS,
                    "rayStartParams": _START_PARAMS,
                    "template": _POD_TEMPLATE,
                },
            },
        },
    },
}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": _DNS_1035}},
}
RAYCLUSTER_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayCluster"},
        "metadata": _METADATA,
        "spec": _CLUSTER_SPEC,
    },
}
RAYJOB_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "required": ["entrypoint"],
            "anyOf": [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}],
            "properties": {
                "entrypoint": {"type": "string", "minLength": 1},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "backoffLimit": {"type": "integer", "minimum": 0},
                "rayClusterSpec": _CLUSTER_SPEC,
                "clusterSelector": {
                    "type": "object",
                    "required": ["ray.io/cluster"],
                    "additionalProperties": {"type": "string"},
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return _one(RAYCLUSTER, "RayCluster")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _one(RAYJOB, "RayJob")


def _cluster_specs(raycluster: dict, rayjob: dict) -> list[tuple[str, dict]]:
    return [("RayCluster", raycluster["spec"]), ("RayJob", rayjob["spec"]["rayClusterSpec"])]


def test_kuberay_manifests_match_the_minimal_schemas(raycluster: dict, rayjob: dict) -> None:
    assert raycluster["apiVersion"] == rayjob["apiVersion"] == "ray.io/v1"
    jsonschema = _jsonschema()
    jsonschema.validate(raycluster, RAYCLUSTER_SCHEMA)
    jsonschema.validate(rayjob, RAYJOB_SCHEMA)
    broken = copy.deepcopy(raycluster)
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, RAYCLUSTER_SCHEMA)
    broken = copy.deepcopy(rayjob)
    del broken["spec"]["rayClusterSpec"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, RAYJOB_SCHEMA)


def test_kuberay_head_and_gpu_workers(raycluster: dict, rayjob: dict) -> None:
    for origin, spec in _cluster_specs(raycluster, rayjob):
        head = spec["headGroupSpec"]
        assert isinstance(head["rayStartParams"], dict), origin
        assert head["rayStartParams"].get("num-cpus") == "0", f"{origin}: trials stay off the head"
        worker = spec["workerGroupSpecs"][0]
        assert 0 <= worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"], origin
        assert worker["maxReplicas"] > 0, origin
        container = worker["template"]["spec"]["containers"][0]
        limits = container["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) > 0, origin
        requests = container["resources"].get("requests", {})
        if "nvidia.com/gpu" in requests:  # Kubernetes requires requests == limits for extended resources
            assert str(requests["nvidia.com/gpu"]) == str(limits["nvidia.com/gpu"]), origin
        images = {
            c["image"] for group in [head, *spec["workerGroupSpecs"]] for c in group["template"]["spec"]["containers"]
        }
        assert len(images) == 1, f"{origin}: head and workers must run the same image, found {images}"
    assert raycluster["spec"]["rayVersion"] == rayjob["spec"]["rayClusterSpec"]["rayVersion"]


def _pvc_names(path: Path) -> set[str]:
    claims = [doc for doc in _documents(path) if doc.get("kind") == "PersistentVolumeClaim"]
    for claim in claims:
        assert "ReadWriteMany" in claim["spec"]["accessModes"], "every pod writes to the run volume"
        assert claim["spec"]["resources"]["requests"]["storage"]
    return {claim["metadata"]["name"] for claim in claims}


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=["raycluster", "rayjob"])
def test_kuberay_every_pod_mounts_the_shared_runs_volume(path: Path) -> None:
    claims = _pvc_names(path)
    assert claims, f"{path.name} should define the PersistentVolumeClaim it mounts"
    resource = next(doc for doc in _documents(path) if doc.get("apiVersion") == "ray.io/v1")
    spec = resource["spec"] if resource["kind"] == "RayCluster" else resource["spec"]["rayClusterSpec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert "/runs" in mounts
        claim = volumes[mounts["/runs"]]["persistentVolumeClaim"]["claimName"]
        assert claim in claims


def test_rayjob_runs_a_search_on_the_shared_volume_and_cleans_up(rayjob: dict) -> None:
    spec = rayjob["spec"]
    entrypoint = spec["entrypoint"]
    assert "nas search" in entrypoint and "--resume" in entrypoint
    assert re.search(r"--config \S+\.ya?ml\b", entrypoint)
    assert "/runs/" in entrypoint, "RUN_DIR must be on the shared /runs volume"
    assert spec["shutdownAfterJobFinishes"] is True
    assert "rayClusterSpec" in spec, "shutdownAfterJobFinishes only applies to a cluster the RayJob creates"
    assert spec.get("ttlSecondsAfterFinished", 0) >= 0


@pytest.mark.parametrize("earlier_run", [False, True])
def test_rayjob_entrypoint_survives_both_shells_and_resumes_only_an_existing_run(
    rayjob: dict, tmp_path: Path, earlier_run: bool
) -> None:
    """KubeRay pastes the entrypoint into the submitter's shell line (`... ray job submit ... -- ENTRYPOINT ;`);
    `ray job submit` shell-quotes the words it receives, and Ray runs that string with a shell on the head."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("sh is not installed")
    runs = tmp_path / "runs"
    entrypoint = rayjob["spec"]["entrypoint"].replace("/runs/", f"{runs}/")
    run_dir = Path(re.search(r"(/[^\s'\"=;]*/runs/[\w.-]+)", entrypoint).group(1))
    assert run_dir.is_relative_to(runs)
    if earlier_run:
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text("name: earlier\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    submitted = tmp_path / "submitted"
    log = tmp_path / "log"
    (bin_dir / "ray").write_text(
        f"#!{sys.executable}\nimport shlex, sys\n"
        "args = sys.argv[1:]\n"
        f"open({str(submitted)!r}, 'w').write(shlex.join(args[args.index('--') + 1 :]))\n"
    )
    _executable(bin_dir / "nas", f'echo "nas $*" >>{shlex.quote(str(log))}\n')
    (bin_dir / "ray").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(tmp_path)}
    submitter = f"if true ; then ray job submit --address http://head:8265 --no-wait -- {entrypoint} ; fi"
    subprocess.run([sh, "-c", submitter], env=env, check=True, timeout=30)
    subprocess.run(submitted.read_text(), shell=True, env=env, check=True, timeout=30)  # the job supervisor
    calls = log.read_text().splitlines()
    expected = f"nas search --config /app/launch/configs/quickstart.yaml --out {run_dir}"
    assert calls == [expected + (" --resume" if earlier_run else "")]


def test_rayjob_promote_trains_data_parallel_on_workers_its_cluster_holds(rayjob: dict) -> None:
    from nas.cli import make_parser

    job = _one(RAYJOB_PROMOTE, "RayJob")
    _jsonschema().validate(job, RAYJOB_SCHEMA)
    spec = job["spec"]
    shell, flag, script = shlex.split(spec["entrypoint"])
    assert (shell, flag) == ("sh", "-c")
    exec_, nas, *words = shlex.split(script)
    args = make_parser().parse_args(words)  # every option is one `nas promote` takes
    assert (exec_, nas, args.command) == ("exec", "nas", "promote")
    assert args.workers > 1 and args.gpus_per_worker == 1
    search_run = re.search(r"run=(\S+);", rayjob["spec"]["entrypoint"]).group(1)
    assert args.run_dir == search_run, "it promotes the run of rayjob.yaml"
    cluster = spec["rayClusterSpec"]
    [group] = cluster["workerGroupSpecs"]
    pod = group["template"]["spec"]
    gpus = int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) * group["maxReplicas"]
    assert gpus >= args.workers * args.gpus_per_worker, "Ray Train would wait for GPUs the cluster cannot have"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["rayVersion"] == rayjob["spec"]["rayClusterSpec"]["rayVersion"]
    for group_spec in [cluster["headGroupSpec"], group]:
        pod = group_spec["template"]["spec"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert claims[mounts["/runs"]] in _pvc_names(RAYJOB), "the search's volume, where its run directory is"


def test_ray_versions_agree_across_templates(cluster: dict, raycluster: dict) -> None:
    pins = re.findall(r"ray\[[^\]]*\]==([\w.]+)", "\n".join(cluster["setup_commands"]))
    assert pins == [raycluster["spec"]["rayVersion"]]


# --------------------------------------------------------------------------------------------------------------
# README


def test_readme_links_resolve_and_topics_are_covered() -> None:
    text = README.read_text()
    links = [target for target in re.findall(r"\]\(([^)#]+)\)", text) if "://" not in target]
    assert links
    for target in links:
        assert (README.parent / target).exists(), target
    for needed in [
        "storage.ray_path",
        "storage.optuna",
        "postgresql://",
        "gpus_per_trial",
        "cpus_per_trial",
        "--resume",
        "nas promote",
        "ray up",
        "sbatch",
        "kubectl apply",
        "--workers",
        "PROMOTE_WORKERS",
        "rayjob-promote.yaml",
    ]:
        assert needed in text, needed
