"""Remote sources against a fake Hub on 127.0.0.1 (``tests/fake_hub.py``): every answer equals
the same file read locally, and the bytes served stay within the header-only limits."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from membudget import GGUFError, load_model
from membudget.cli import main
from membudget.model import ModelSpec
from membudget.readers.gguf import read_gguf
from membudget.readers.remote.http import RemoteError
from membudget.readers.remote.hub import choose_gguf, gguf_tag
from membudget.readers.remote.ollama import OllamaStoreError, parse_ollama_name
from tests.fake_hub import TOKEN, FakeHub, FakeRepo, repo_from_dir
from tests.ggufs import Tiny, write_model

MIB = 1 << 20


def _same(remote: ModelSpec, local: ModelSpec) -> None:
    """The answers that matter equal the local read's."""
    for field in (
        "architecture",
        "n_params",
        "n_embd",
        "n_vocab",
        "n_ctx_train",
        "layers",
        "weights",
        "tensors",
        "quant",
        "mla",
        "recurrent",
        "tied_embeddings",
    ):
        assert getattr(remote, field) == getattr(local, field), field


def _split_gguf(d: Path, parts: int = 2) -> list[Path]:
    import gguf

    out = []
    for i in range(parts):
        p = d / f"split-Q6_K-{i + 1:05d}-of-{parts:05d}.gguf"
        w = gguf.GGUFWriter(p, "llama")
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_NO, i)
        w.add_uint16(gguf.Keys.Split.LLM_KV_SPLIT_COUNT, parts)
        if i == 0:
            w.add_block_count(1)
            w.add_embedding_length(64)
            w.add_head_count(4)
            w.add_context_length(256)
            w.add_vocab_size(32)
        w.add_tensor(f"t{i}.weight", np.zeros((4, 64), dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        out.append(p)
    return out


def _checkpoint(d: Path) -> Path:
    """A sharded safetensors checkpoint of a tiny Llama with its config and index."""
    from safetensors.numpy import save_file

    cfg = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 256,
        "max_position_embeddings": 2048,
        "torch_dtype": "float32",
    }
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    f32 = np.float32
    shards = {
        "model-00001-of-00002.safetensors": {
            "model.embed_tokens.weight": np.zeros((256, 64), f32),
            "model.layers.0.self_attn.q_proj.weight": np.zeros((64, 64), f32),
        },
        "model-00002-of-00002.safetensors": {
            "model.layers.1.self_attn.q_proj.weight": np.zeros((64, 64), f32),
            "lm_head.weight": np.zeros((256, 64), f32),
        },
    }
    weight_map = {}
    for name, tensors in shards.items():
        save_file(tensors, str(d / name))
        weight_map.update(dict.fromkeys(tensors, name))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return d


@pytest.fixture
def hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gemma_gguf: Path
) -> Iterator[tuple[FakeHub, Path]]:
    """A fake Hub holding a GGUF repo (two quants, an mmproj), a split GGUF in a subfolder, a
    sharded safetensors checkpoint, a gated repo and the real Gemma 3 270M GGUF."""
    local = tmp_path / "local"
    local.mkdir()
    q4 = write_model(local / "Tiny-Q4_K_M.gguf", Tiny(n_layer=3))
    q8 = write_model(local / "Tiny-Q8_0.gguf", Tiny(n_layer=3, n_ff=256))
    split_dir = local / "split"
    split_dir.mkdir()
    _split_gguf(split_dir)
    ckpt = _checkpoint(local / "ckpt")
    fake = FakeHub(
        repos={
            "owner/tiny-GGUF": FakeRepo(
                {
                    "Tiny-Q4_K_M.gguf": q4.read_bytes(),
                    "Tiny-Q8_0.gguf": q8.read_bytes(),
                    "mmproj-Tiny-Q8_0.gguf": q4.read_bytes(),
                    "README.md": b"# tiny",
                    **repo_from_dir(split_dir, "Q6_K/"),
                }
            ),
            "owner/one-GGUF": FakeRepo({"Tiny-Q4_K_M.gguf": q4.read_bytes()}),
            "owner/tiny": FakeRepo(repo_from_dir(ckpt)),
            "owner/gated": FakeRepo({"Tiny-Q4_K_M.gguf": q4.read_bytes()}, gated=True),
            "google/gemma-3-270m-GGUF": FakeRepo({gemma_gguf.name: gemma_gguf.read_bytes()}),
            "owner/empty": FakeRepo({"README.md": b"nothing"}),
        },
        plain={"Tiny-Q4_K_M.gguf": q4.read_bytes(), "huge.gguf": q4.read_bytes()},
    )
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("MEMBUDGET_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    try:
        yield fake, local
    finally:
        fake.close()


def test_gguf_by_tag_equals_the_local_file(hub: tuple[FakeHub, Path]) -> None:
    fake, local = hub
    remote = load_model("owner/tiny-GGUF:q4_k_m")
    _same(remote, load_model(local / "Tiny-Q4_K_M.gguf"))
    assert remote.source == "owner/tiny-GGUF:q4_k_m"
    assert set(fake.served) == {"owner/tiny-GGUF/Tiny-Q4_K_M.gguf"}, "one file, nothing else"


def test_the_real_gemma_header_is_read_in_growing_ranges(
    hub: tuple[FakeHub, Path], gemma_gguf: Path
) -> None:
    """A 262,144-token vocabulary: the header (about 6 MiB) read once, in contiguous growing
    ranges, at most 2 MiB past its end; the weights never."""
    fake, _ = hub
    remote = load_model("google/gemma-3-270m-GGUF")
    _same(remote, load_model(gemma_gguf))
    header = read_gguf(gemma_gguf).data_offset
    key = f"google/gemma-3-270m-GGUF/{gemma_gguf.name}"
    assert fake.served[key] <= header + 2 * MIB
    spans = [(s, e) for k, s, e in fake.ranges if k == key]
    assert spans[0][0] == 0
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start == end, "each range starts where the last ended: nothing read twice"
    sizes = [e - s for s, e in spans]
    assert sizes[1] > sizes[0], "the ranges grow"


def test_split_gguf_in_a_subfolder_is_read_across_its_parts(hub: tuple[FakeHub, Path]) -> None:
    _fake, local = hub
    remote = load_model("owner/tiny-GGUF:Q6_K")
    _same(remote, load_model(local / "split" / "split-Q6_K-00001-of-00002.gguf"))
    with pytest.raises(RemoteError, match="matches 2 GGUF models"):
        choose_gguf("o/r", ("a-Q8_0.gguf", "Q8_0/b-Q8_0-00001-of-00001.gguf"), "Q8_0")


def test_sharded_safetensors_equals_the_local_checkpoint(hub: tuple[FakeHub, Path]) -> None:
    fake, local = hub
    remote = load_model("owner/tiny")
    _same(remote, load_model(local / "ckpt"))
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        data = (local / "ckpt" / shard).read_bytes()
        header = 8 + int.from_bytes(data[:8], "little")
        assert fake.served[f"owner/tiny/{shard}"] <= header + MIB


def test_a_second_run_makes_no_data_request_and_offline_none_at_all(
    hub: tuple[FakeHub, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, _local = hub
    first = load_model("owner/tiny")
    fake.reset_counts()
    second = load_model("owner/tiny")
    assert fake.storage_requests == []
    _same(second, first)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fake.reset_counts()
    offline = load_model("owner/tiny")
    assert fake.api_requests == []
    assert fake.storage_requests == []
    _same(offline, first)


def test_offline_with_nothing_cached_is_refused(
    hub: tuple[FakeHub, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RemoteError, match="HF_HUB_OFFLINE"):
        load_model("owner/one-GGUF")


def test_gated_repo_needs_a_token(
    hub: tuple[FakeHub, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake, local = hub
    with pytest.raises(RemoteError, match="HF_TOKEN"):
        load_model("owner/gated")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _same(load_model("owner/gated"), load_model(local / "Tiny-Q4_K_M.gguf"))


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        pytest.param("owner/missing", "no such repo on the Hub", id="404"),
        pytest.param("owner/tiny-GGUF", "holds 3 GGUF models", id="several, no tag"),
        pytest.param("owner/tiny-GGUF:Q2_K", "tags: Q4_K_M, Q6_K, Q8_0", id="unknown tag"),
        pytest.param("owner/empty", "no GGUF file and no safetensors", id="nothing to read"),
    ],
)
def test_refusals_are_one_line_exit_2(
    hub: tuple[FakeHub, Path],
    capsys: pytest.CaptureFixture[str],
    source: str,
    fragment: str,
) -> None:
    code = main(["inspect", source])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_urls(hub: tuple[FakeHub, Path]) -> None:
    fake, local = hub
    _same(
        load_model(f"{fake.storage}/plain/Tiny-Q4_K_M.gguf"),
        load_model(local / "Tiny-Q4_K_M.gguf"),
    )
    with pytest.raises(RemoteError, match="does not support byte ranges"):
        load_model(f"{fake.storage}/norange/Tiny-Q4_K_M.gguf")
    assert fake.served["norange/Tiny-Q4_K_M.gguf"] < 4 * MIB, "not downloaded"
    with pytest.raises(RemoteError, match="more than the range asked"):
        load_model(f"{fake.storage}/flood/Tiny-Q4_K_M.gguf")
    with pytest.raises(RemoteError, match="more than 5 redirects"):
        load_model(f"{fake.storage}/loop/Tiny-Q4_K_M.gguf")


def test_the_fake_hub_answers_as_the_real_one_to_huggingface_hub(
    hub: tuple[FakeHub, Path], tmp_path: Path
) -> None:
    """huggingface_hub's own client reads the fake Hub: model_info, hf_hub_download and
    HfFileSystem's range reads."""
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download

    fake, local = hub
    info = HfApi(endpoint=fake.endpoint).model_info("owner/tiny-GGUF")
    assert info.sha == fake.repos["owner/tiny-GGUF"].sha
    assert "Tiny-Q8_0.gguf" in {s.rfilename for s in info.siblings or ()}
    got = hf_hub_download(
        "owner/one-GGUF", "Tiny-Q4_K_M.gguf", cache_dir=tmp_path / "hf", endpoint=fake.endpoint
    )
    assert Path(got).read_bytes() == (local / "Tiny-Q4_K_M.gguf").read_bytes()
    fs = HfFileSystem(endpoint=fake.endpoint)
    with fs.open("owner/tiny-GGUF/Tiny-Q8_0.gguf", "rb") as f:
        f.seek(100)
        assert f.read(50) == (local / "Tiny-Q8_0.gguf").read_bytes()[100:150]


@pytest.mark.parametrize(
    ("files", "tag", "chosen"),
    [
        pytest.param(("a-Q4_K_M.gguf",), None, ("a-Q4_K_M.gguf",), id="one file, no tag"),
        pytest.param(
            ("a-Q4_K_M.gguf", "mmproj-a-f16.gguf"), None, ("a-Q4_K_M.gguf",), id="mmproj skipped"
        ),
        pytest.param(("a-IQ4_XS.gguf", "a-Q4_K_M.gguf"), "q4_k_m", ("a-Q4_K_M.gguf",), id="case"),
        pytest.param(
            ("a-IQ4_K_M.gguf", "b-Q4_K_M.gguf"), "Q4_K_M", ("b-Q4_K_M.gguf",), id="not inside IQ"
        ),
        pytest.param(
            ("Q4_K_M/a-Q4_K_M-00002-of-00002.gguf", "Q4_K_M/a-Q4_K_M-00001-of-00002.gguf"),
            "Q4_K_M",
            ("Q4_K_M/a-Q4_K_M-00001-of-00002.gguf", "Q4_K_M/a-Q4_K_M-00002-of-00002.gguf"),
            id="split set in a subfolder",
        ),
        pytest.param(
            ("a.imatrix.gguf", "a-draft-Q8_0.gguf", "a-Q8_0.gguf"),
            None,
            ("a-Q8_0.gguf",),
            id="imatrix and draft skipped",
        ),
    ],
)
def test_choose_gguf(files: tuple[str, ...], tag: str | None, chosen: tuple[str, ...]) -> None:
    assert choose_gguf("o/r", files, tag) == chosen


def test_gguf_tags() -> None:
    assert gguf_tag("Qwen3-8B-Q4_K_M.gguf") == "Q4_K_M"
    assert gguf_tag("llama-2-7b.Q5_K_S.gguf") == "Q5_K_S"
    assert gguf_tag("Qwen3-8B-UD-Q4_K_XL-00001-of-00002.gguf") == "UD-Q4_K_XL"
    assert gguf_tag("gemma-3-270m-it-BF16.gguf") == "BF16"


def _ollama_store(root: Path, name: tuple[str, str, str, str], blob: bytes, num_ctx: int) -> None:
    import hashlib

    host, ns, model, tag = name
    digest = hashlib.sha256(blob).hexdigest()
    params = json.dumps({"num_ctx": num_ctx}).encode()
    pdigest = hashlib.sha256(params).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(blob)
    (root / "blobs" / f"sha256-{pdigest}").write_bytes(params)
    manifest = root / "manifests" / host / ns / model / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "layers": [
                    {
                        "mediaType": "application/vnd.ollama.image.model",
                        "digest": f"sha256:{digest}",
                    },
                    {
                        "mediaType": "application/vnd.ollama.image.params",
                        "digest": f"sha256:{pdigest}",
                    },
                ],
            }
        )
    )


def test_ollama_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf_file = write_model(tmp_path / "m.gguf", Tiny(n_layer=3))
    root = tmp_path / "ollama"
    _ollama_store(
        root, ("registry.ollama.ai", "library", "qwen3", "8b"), gguf_file.read_bytes(), 8192
    )
    _ollama_store(root, ("hf.co", "owner", "repo", "Q4_K_M"), gguf_file.read_bytes(), 4096)
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    spec = load_model("ollama:qwen3:8b")
    _same(spec, load_model(gguf_file))
    assert any("num_ctx 8192" in n for n in spec.notes)
    assert load_model("ollama:hf.co/owner/repo:Q4_K_M").n_params == spec.n_params
    with pytest.raises(OllamaStoreError, match="ollama pull"):
        load_model("ollama:qwen3:32b")
    assert parse_ollama_name("ollama:qwen3") == ("registry.ollama.ai", "library", "qwen3", "latest")
    with pytest.raises(OllamaStoreError):
        parse_ollama_name("ollama:../../etc")


def test_the_page_reads_remote_models_only_when_allowed(hub: tuple[FakeHub, Path]) -> None:
    """serve without --allow-remote makes no outbound request; with it, Hub repos and Ollama
    names are read, but a URL only on the Hub's own host (no fetch-anything endpoint)."""
    from fastapi.testclient import TestClient

    from membudget.web.app import create_app

    fake, _ = hub
    body = {"model": "owner/one-GGUF", "memory": "8GiB"}
    closed = TestClient(create_app())
    r = closed.post("/api/plan", json=body)
    assert r.status_code >= 400
    assert "--allow-remote" in r.text
    assert fake.api_requests == []
    assert fake.storage_requests == []
    opened = TestClient(create_app(allow_remote=True))
    r = opened.post("/api/plan", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["model"]["n_params"] == load_model("owner/one-GGUF").n_params
    fake.reset_counts()
    other_host = f"{fake.storage}/plain/Tiny-Q4_K_M.gguf"
    r = opened.post("/api/plan", json={"model": other_host, "memory": "8GiB"})
    assert r.status_code >= 400
    assert fake.storage_requests == []


def test_a_header_that_claims_a_terabyte_is_refused_quickly(hub: tuple[FakeHub, Path]) -> None:
    """A server whose file claims 2**44 bytes, with a string that claims 2**40: refused at the
    header cap, after one small range, whatever the claimed sizes."""
    import struct

    fake, _ = hub
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a"
    header += struct.pack("<IQ", 8, 1 << 40)  # a STRING value of 2**40 bytes
    fake.plain["claims.gguf"] = header + b"x" * 4096
    with pytest.raises(GGUFError, match="more than 256 MiB"):
        load_model(f"{fake.storage}/claims/claims.gguf")
    assert fake.served["claims/claims.gguf"] <= 64 * 1024


def test_revisions(hub: tuple[FakeHub, Path], capsys: pytest.CaptureFixture[str]) -> None:
    fake, local = hub
    sha = fake.repos["owner/one-GGUF"].sha
    _same(load_model("owner/one-GGUF", revision=sha), load_model(local / "Tiny-Q4_K_M.gguf"))
    assert main(["inspect", "owner/one-GGUF", "--revision", "v9", "-q"]) == 2
    assert "has no revision 'v9'" in capsys.readouterr().err


def test_the_corpus_reads_the_same_remotely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every architecture of the accuracy corpus (tests/arch_models.py, 512-token vocabularies),
    each in its own repo: the remote read equals the local one, within the header budget."""
    from tests.arch_models import SMALL_VOCAB

    local: dict[str, Path] = {}
    repos: dict[str, FakeRepo] = {}
    for name, make in SMALL_VOCAB.items():
        path = make(tmp_path / f"{name}.gguf")
        local[name] = path
        repos[f"corpus/{name}-GGUF"] = FakeRepo({path.name: path.read_bytes()})
    fake = FakeHub(repos=repos)
    fake.start()
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setenv("MEMBUDGET_CACHE", str(tmp_path / "cache"))
    try:
        for name, path in local.items():
            _same(load_model(f"corpus/{name}-GGUF"), load_model(path))
            header = read_gguf(path).data_offset
            assert fake.served[f"corpus/{name}-GGUF/{path.name}"] <= header + 2 * MIB, name
    finally:
        fake.close()
