"""llama.cpp's scheduler, on graphs small enough to follow by hand
(membudget.engines.llamacpp.sched). The real graphs are checked against CUDA and RPC logs in
tests/test_cuda_logs.py and tests/test_llama_server.py."""

from __future__ import annotations

from membudget.engines.llamacpp.ggml import Graph, Tensor
from membudget.engines.llamacpp.sched import Backend, cuda_alloc_size, schedule

GPU, CPU = 0, 1
ROWS = 64  # tokens: above CUDA's op-offload batch of 32


def _graph(weight_layer: int) -> Graph:
    """Token rows looked up on the host, one matrix product, one output."""
    g = Graph()
    tokens = g.input("I32", ROWS, name="inp_tokens")
    rows = g.get_rows(g.external("F32", 256, 1000), tokens)  # the input layer: the host's
    g.layer = weight_layer
    out = g.mul_mat(g.external("F32", 256, 512), rows)
    out.mark("output")
    g.expand(out)
    return g


def _device_of(t: Tensor) -> int:
    return CPU if t.slot < 0 else GPU


def test_the_host_keeps_inputs_and_rows_and_the_device_copies_them() -> None:
    g = _graph(0)
    gpu = Backend("CUDA0", 128, 32)
    host, dev = schedule(g, (gpu, Backend("CPU", 32)), _device_of)[::-1]
    tokens, rows, out = ROWS * 4, 256 * ROWS * 4, 512 * ROWS * 4
    assert host == tokens + rows  # the input and the looked-up rows, on the CPU
    assert dev == rows + out  # the rows' copy and the product, on the GPU


def test_a_host_weight_is_copied_to_the_device_that_takes_its_product() -> None:
    """Op offload: a CPU weight's product over 32 rows or more runs on the first GPU, which
    then holds a copy of the weight; below 32 rows it stays on the CPU."""
    g = _graph(-1)
    gpu = Backend("CUDA0", 128, 32)
    host, dev = schedule(g, (gpu, Backend("CPU", 32)), _device_of)[::-1]
    weight, rows, out = 256 * 512 * 4, 256 * ROWS * 4, 512 * ROWS * 4
    assert dev == weight + rows + out
    assert host == ROWS * 4 + rows
    no_offload = Backend("RPC0", 32)
    host, dev = schedule(_graph(-1), (no_offload, Backend("CPU", 32)), _device_of)[::-1]
    assert dev == 0
    assert host == ROWS * 4 + rows + out


def test_cuda_allocates_flash_attention_with_f16_copies_of_a_quantised_cache() -> None:
    g = Graph()
    q = g.new("F32", 64, 8, 4)
    k = g.view(g.external("Q8_0", 64, 256, 2), (64, 256, 2), (68, 68 * 256))
    v = g.view(g.external("Q8_0", 64, 256, 2), (64, 256, 2), (68, 68 * 256))
    fa = g.f32("FLASH_ATTN_EXT", (64, 4, 8), q, k, v, None)
    plain = 64 * 4 * 8 * 4
    assert cuda_alloc_size(fa) == plain + 2 * (64 * 256 * 2 * 2)
