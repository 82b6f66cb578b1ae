"""The pieces llama.cpp builds its graphs from (``llm_graph_context`` in ``src/llama-graph.cpp``),
as shape-only ggml ops on a :class:`~membudget.engines.llamacpp.ggml.Graph`.

Each method adds the same ops, with the same shapes and sources in the same order, as the
llama.cpp function its docstring names (llama.cpp 0c1e570). Weights and caches are external
tensors: only their shapes matter, since ggml-alloc never places them. Biases and scales are
left out where llama.cpp applies them in place (they change no size and no placement).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from membudget.engines.llamacpp.ggml import Graph, Tensor, type_size
from membudget.engines.llamacpp.memo import MEMO
from membudget.model import LayerSpec, ModelSpec

__all__ = ["Gating", "GraphBuilder", "GraphSettings"]

Gating = Literal["softmax", "sigmoid", "softmax_weight"]


@dataclass(frozen=True, slots=True)
class GraphSettings:
    """The reserve pass's inputs (``llama_context::sched_reserve``), already resolved."""

    n_tokens: int
    """Tokens in the ubatch: ``min(n_ctx, n_ubatch)`` rounded up to a multiple of ``n_seqs``."""
    n_outputs: int
    """Rows kept for the logits: ``min(n_ctx, n_ubatch)`` (before that rounding)."""
    n_seqs: int
    n_kv: int
    """Cells attended per stream (the whole cache in the reserve)."""
    n_swa_kv: int
    n_stream: int
    flash_attn: bool
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    alignment: int = 32
    attn_rotation: bool = True


def has_tensor(spec: ModelSpec, suffix: str) -> bool:
    return MEMO.get(
        spec, ("has-tensor", suffix), lambda: any(t.name.endswith(suffix) for t in spec.tensors)
    )


def tensor_width(spec: ModelSpec, name: str, default: int = 0) -> int:
    """The output width (second dimension) of a stored matrix, or ``default`` if absent."""
    widths: dict[str, int] = MEMO.get(
        spec,
        "matrix-widths",
        lambda: {t.name: t.shape[1] for t in spec.tensors if len(t.shape) >= 2},
    )
    return widths.get(name, default)


def row_size(t: Tensor, n: int) -> int:
    """``ggml_row_size``: bytes of ``n`` elements of ``t``'s type."""
    block, size = type_size(t.type)
    return n // block * size


def _quantized(type_name: str) -> bool:
    return type_name.upper() not in ("F32", "F16", "BF16")


def _rotation_size(head_dims: set[int], first: int = 64) -> int:
    """``llama_kv_cache::build_input_k_rot``: the largest power of two from 64 dividing the head."""
    (n,) = head_dims
    size = first
    while n % (size * 2) == 0:
        size *= 2
    return size


class GraphBuilder:
    """A graph under construction for one model and one reserve pass."""

    def __init__(
        self, spec: ModelSpec, settings: GraphSettings, keep: frozenset[int] | None = None
    ) -> None:
        self.spec = spec
        self.s = settings
        self.keep = keep
        """The layers built (None: all): see :mod:`.reduce`."""
        self.g = Graph()
        self.n_tokens = settings.n_tokens
        attn = [layer for layer in spec.layers if layer.has_kv]
        self.v_trans = not settings.flash_attn  # the V cache is transposed without FA
        self.v_gqa_max = max((la.n_head_kv * la.head_dim_v for la in attn), default=0)
        self.iswa = any(la.is_swa for la in attn)
        self._stored: dict[str, bool] = {}
        self.fused_qkv = self.stores(".attn_qkv.weight")
        self.inputs: dict[str, Tensor] = {}
        self._names: frozenset[str] | None = None

    def stores(self, suffix: str) -> bool:
        """Whether the file stores a tensor whose name ends with ``suffix`` (asked once)."""
        found = self._stored.get(suffix)
        if found is None:
            found = self._stored[suffix] = has_tensor(self.spec, suffix)
        return found

    # -- inputs --------------------------------------------------------------------------------
    def inp_embd(self) -> Tensor:
        """``build_inp_embd``: token rows, with the embeddings input kept beside them."""
        g, e = self.g, self.spec.n_embd
        tokens = g.input("I32", self.n_tokens, name="inp_tokens")
        embd = g.input("F32", e, self.n_tokens, name="inp_embd")
        rows = g.get_rows(g.external("F16", e, self.spec.n_vocab, name="token_embd"), tokens)
        g.expand(rows)
        g.expand(embd)  # ggml_build_forward_select puts both paths in the graph
        return rows

    def inp_pos(self) -> Tensor:
        return self.g.input("I32", self.n_tokens, name="inp_pos")

    def out_ids(self) -> Tensor:
        return self.g.input("I32", self.s.n_outputs, name="out_ids")

    def kq_mask(self, n_kv: int) -> Tensor:
        """``build_attn_inp_kq_mask``: f16 with flash attention, f32 without."""
        s = self.s
        return self.g.input(
            "F16" if s.flash_attn else "F32", n_kv, self.n_tokens // s.n_stream, 1, s.n_stream
        )

    def attn_inputs(self, prefix: str = "", *, k_only: bool = False) -> None:
        """``build_attn_inp_kv`` (``_iswa`` for the ``swa_`` prefix, ``_k`` with ``k_only``):
        the cache row indices, the mask and, for a quantised cache, the Hadamard rotations."""
        g, s = self.g, self.s
        n_kv = s.n_swa_kv if prefix else s.n_kv
        self.inputs[prefix + "k_idxs"] = g.input("I64", self.n_tokens)
        if not k_only:
            v_rows = self.n_tokens * (self.v_gqa_max if self.v_trans else 1)
            self.inputs[prefix + "v_idxs"] = g.input("I64", v_rows)
        self.inputs[prefix + "mask"] = self.kq_mask(n_kv)
        if k_only or not s.attn_rotation:
            return
        layers = [la for la in self.spec.layers if la.has_kv]
        head_k = {la.head_dim_k for la in layers}
        head_v = {la.head_dim_v for la in layers}
        if _quantized(s.cache_type_k) and len(head_k) == 1 and min(head_k) % 64 == 0:
            n = _rotation_size(head_k)
            self.inputs[prefix + "k_rot"] = g.input("F32", n, n)
        if _quantized(s.cache_type_v) and len(head_v) == 1 and min(head_v) % 64 == 0:
            self.inputs[prefix + "v_rot"] = g.input("F32", 64, 64)

    # -- layers --------------------------------------------------------------------------------
    def norm(self, x: Tensor) -> Tensor:
        """``build_norm`` (RMS, with a weight; the weight multiplies in place)."""
        g = self.g
        return g.same("MUL", self._named_norm(g.same("RMS_NORM", x)), g.external("F32", x.ne[0]))

    def layer_norm(self, x: Tensor) -> Tensor:
        """``build_norm`` with ``LLM_NORM``, a weight and a bias (both applied in place)."""
        g, e = self.g, x.ne[0]
        cur = g.same("MUL", self._named_norm(g.same("NORM", x)), g.external("F32", e))
        return g.same("ADD", cur, g.external("F32", e))

    def _named_norm(self, t: Tensor) -> Tensor:
        """``build_norm`` names a weighted norm ``norm`` with its layer (``il``; -1 for the input
        and output norms); llama-context.cpp's ``graph_get_cb`` pins such a node to its layer's
        device when every layer is offloaded. Tagged here as kind ``n`` with the layer's slot."""
        layer = self.g.layer
        if 0 <= layer < self.spec.n_layer:
            t.slot, t.kind = layer, "n"
        return t

    def linear(self, x: Tensor, n_out: int, n_in: int | None = None, name: str = "") -> Tensor:
        """``build_lora_mm``: an f32 ``n_out x tokens`` result whatever the weight type.
        ``name``: the stored weight's name without its layer and ``.weight`` (``attn_q``),
        where its layer holds others of its shape that a split tells apart."""
        g = self.g
        out = g.mul_mat(g.external("F16", n_in or x.ne[0], n_out, name=name), x)
        if name and self._has_bias(name):
            # the stored bias, added as its own op (in place for ggml-alloc, but an op reading
            # a weight for llama.cpp's scheduler)
            out = g.same("ADD", out, g.external("F32", n_out, name=f"{name}.bias"))
        return out

    def _has_bias(self, name: str) -> bool:
        layer = self.g.layer
        stored = f"blk.{layer}.{name}.bias" if 0 <= layer < self.spec.n_layer else f"{name}.bias"
        if self._names is None:
            self._names = frozenset(t.name for t in self.spec.tensors)
        return stored in self._names

    def qkv(self, layer: LayerSpec, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``build_qkv``: separate projections reshaped to heads, or views of a fused one."""
        g, n_tok = self.g, self.n_tokens
        hk, hv, nh, nkv = layer.head_dim_k, layer.head_dim_v, layer.n_head, layer.n_head_kv
        if not self.fused_qkv:
            q = g.reshape(self.linear(x, nh * hk, name="attn_q"), hk, nh, n_tok)
            k = g.reshape(self.linear(x, nkv * hk, name="attn_k"), hk, nkv, n_tok)
            v = g.reshape(self.linear(x, nkv * hv, name="attn_v"), hv, nkv, n_tok)
            return q, k, v
        qkv = self.linear(x, nh * hk + nkv * (hk + hv), name="attn_qkv")
        row = qkv.nb[1]
        q = g.view(qkv, (hk, nh, n_tok), (row_size(qkv, hk), row))
        k = g.view(qkv, (hk, nkv, n_tok), (row_size(qkv, hk), row))
        v = g.view(qkv, (hv, nkv, n_tok), (row_size(qkv, hv), row))
        return q, k, v

    def hadamard(self, x: Tensor, rot: Tensor) -> Tensor:
        """``llama_mul_mat_hadamard``: rotate ``x`` in blocks of the matrix's size."""
        g, n = self.g, rot.ne[0]
        rows = x.n_elements // n
        flat = g.reshape(x, n, rows) if x.is_contiguous() else g.cont(x, n, rows)
        return g.reshape(g.mul_mat(rot, flat), *x.ne)

    def attention(
        self,
        layer: LayerSpec,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        softcap: bool = False,
        project: bool = True,
    ) -> Tensor:
        """``build_attn`` over a KV cache: rotate, store K and V (``cpy_k``, ``cpy_v``),
        attend over the cache views (``get_k``, ``get_v``), project (unless ``project`` is
        off: Qwen3-Next gates the heads before its output projection)."""
        g, s, n_tok = self.g, self.s, self.n_tokens
        prefix = "swa_" if layer.is_swa else ""
        n_kv = s.n_swa_kv if layer.is_swa else s.n_kv
        k_rot = self.inputs.get(prefix + "k_rot")
        v_rot = self.inputs.get(prefix + "v_rot")
        if k_rot is not None:
            q, k = self.hadamard(q, k_rot), self.hadamard(k, k_rot)
        if v_rot is not None:
            v = self.hadamard(v, v_rot)
        for t in (q, k, v) if self.iswa else (q, v, k):
            g.expand(t)
        hk, hv, nkv, ns = layer.head_dim_k, layer.head_dim_v, layer.n_head_kv, s.n_stream
        cache_k = g.external(s.cache_type_k.upper(), hk * nkv, n_kv, ns, kind="c")
        cache_v = g.external(s.cache_type_v.upper(), hv * nkv, n_kv, ns, kind="c")
        k_dst = g.reshape(cache_k, hk * nkv, n_kv * ns) if ns > 1 else cache_k
        k_rows = g.view(k, (hk * nkv, n_tok), (k.nb[2],))
        g.expand(g.set_rows(k_dst, k_rows, self.inputs[prefix + "k_idxs"]))
        if not self.v_trans:
            v_dst = g.reshape(cache_v, hv * nkv, n_kv * ns) if ns > 1 else cache_v
            v_rows = g.view(v, (hv * nkv, n_tok), (v.nb[2],))
            g.expand(g.set_rows(v_dst, v_rows, self.inputs[prefix + "v_idxs"]))
            v_view = g.view(cache_v, (hv, nkv, n_kv, ns), (row_size(cache_v, hv), *cache_v.nb[1:3]))
        else:
            merged = v.nb[2] == row_size(v, hv * nkv)
            v_flat = g.reshape(v, hv * nkv, n_tok) if merged else g.cont(v, hv * nkv, n_tok)
            v_flat = g.reshape(v_flat, 1, v_flat.n_elements)
            g.expand(
                g.set_rows(
                    g.reshape(cache_v, 1, cache_v.n_elements),
                    v_flat,
                    self.inputs[prefix + "v_idxs"],
                )
            )
            # transposed: one row of n_kv cells per value dimension
            v_view = g.view(
                cache_v,
                (n_kv, nkv, hv, ns),
                (row_size(cache_v, n_kv * hv), row_size(cache_v, n_kv), cache_v.nb[2]),
            )
        k_view = g.view(cache_k, (hk, nkv, n_kv, ns), (row_size(cache_k, hk), *cache_k.nb[1:3]))
        cur = self.mha(q, k_view, v_view, self.inputs[prefix + "mask"], softcap=softcap)
        if v_rot is not None:
            cur = self.hadamard(cur, v_rot)
        return self.linear(cur, self.spec.n_embd, name="attn_output") if project else cur

    def mha(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor,
        *,
        softcap: bool = False,
        v_mla: Tensor | None = None,
    ) -> Tensor:
        """``build_attn_mha``: flash attention, or scores, softmax and the weighted sum."""
        g, ns = self.g, self.s.n_stream
        v_trans = v.nb[1] > v.nb[2]
        per_stream = q.ne[2] // ns
        q = g.view(q, (q.ne[0], q.ne[1], per_stream, ns), (q.nb[1], q.nb[2], q.nb[2] * per_stream))
        q, k, v = (g.permute(t, 0, 2, 1, 3) for t in (q, k, v))
        # gpt-oss: a learned sink logit per head, read by the softmax (a weight of the layer)
        sinks = None
        if self.stores(".attn_sinks.weight"):
            sinks = g.external("F32", q.ne[2], name="attn_sinks")
        if self.s.flash_attn:
            if v_trans:
                v = g.transpose(v)
            cur = g.f32(
                "FLASH_ATTN_EXT", (v.ne[0], q.ne[2], q.ne[1], q.ne[3]), q, k, v, mask, sinks
            )
            if v_mla is not None:
                cur = g.mul_mat(v_mla, g.permute(cur, 0, 2, 1, 3))
                cur = g.cont(g.permute(cur, 0, 2, 1, 3))
            cur = g.reshape(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        else:
            kq = g.mul_mat(k, q)
            if softcap:  # scale, tanh, scale: all in place
                kq = g.same("SCALE", g.same("UNARY", g.same("SCALE", kq)))
            kq = g.same("SOFT_MAX", kq, mask, sinks)
            if not v_trans:
                v = g.cont(g.transpose(v))
            kqv = g.mul_mat(v, kq)
            if v_mla is not None:
                kqv = g.mul_mat(v_mla, kqv)
            cur = g.permute(kqv, 0, 2, 1, 3)
            cur = g.cont(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        g.expand(cur)
        return cur

    def ffn(self, x: Tensor, n_ff: int, suffix: str = "") -> Tensor:
        """``build_ffn`` with a parallel gate (SwiGLU and GeGLU have the same sizes); the
        shared experts' with ``suffix`` ``_shexp``."""
        up = self.linear(x, n_ff, name=f"ffn_up{suffix}")
        gate = self.linear(x, n_ff, name=f"ffn_gate{suffix}")
        return self.linear(self.g.same("GLU", gate, up), x.ne[0], n_ff, f"ffn_down{suffix}")

    def moe_ffn(
        self,
        x: Tensor,
        *,
        norm_w: bool = True,
        gating: Gating = "softmax",
        bias: bool = False,
        weight_before: bool = False,
    ) -> Tensor:
        """``build_moe_ffn``: route, run the chosen experts, weight and sum them. ``gating``
        is llama.cpp's expert gating function; ``bias`` adds DeepSeek V3's selection bias.
        ``weight_before`` is Llama 4's routing: the experts are chosen by the raw logits and
        the input, repeated per chosen expert, is weighted before the experts run (not their
        outputs after)."""
        g, spec, n_tok = self.g, self.spec, x.ne[1]  # the last layer may have fewer rows
        e, n_exp, n_used = x.ne[0], spec.n_expert, max(spec.n_expert_used, 1)
        n_ff = spec.n_ff_expert or spec.n_ff
        logits = self.linear(x, n_exp, name="ffn_gate_inp")
        if gating == "softmax":
            probs = g.same("SOFT_MAX", logits, None)
        elif gating == "sigmoid":
            probs = g.same("UNARY", logits)
        else:  # softmax over the chosen experts' logits only, below
            probs = logits
        selection = g.same("ADD", probs, g.external("F32", n_exp)) if bias else probs
        if weight_before:
            selection = logits
        order = g.op("ARGSORT", "I32", selection.ne, selection)
        selected = g.view(order, (n_used, n_tok), (order.nb[1],))
        weights = g.get_rows(g.reshape(probs, 1, n_exp, n_tok), selected)
        if gating == "softmax_weight":
            flat = g.same("SOFT_MAX", g.reshape(weights, n_used, n_tok), None)
            weights = g.reshape(flat, 1, n_used, n_tok)
        if norm_w:
            flat = g.reshape(weights, n_used, n_tok)
            total = g.same("CLAMP", g.f32("SUM_ROWS", (1, n_tok), flat))
            weights = g.reshape(g.same("DIV", flat, total), 1, n_used, n_tok)
        if spec.expert_weights_scale not in (0.0, 1.0):
            weights = g.same("SCALE", weights)
        g.expand(weights)
        cur = g.reshape(x, e, 1, n_tok)
        if weight_before:  # ggml_repeat_4d to one row per chosen expert, then weighted
            cur = g.same("MUL", g.f32("REPEAT", (e, n_used, n_tok), cur), weights)

        def experts_mm(n_out: int, n_in: int, b: Tensor, name: str) -> Tensor:
            w = g.external("F16", n_in, n_out, n_exp, name=name, kind="e")
            out = g.f32("MUL_MAT_ID", (n_out, n_used, n_tok), w, b, selected)
            if self.stores(f".{name}.bias"):  # gpt-oss: ggml_add_id, each expert's bias
                bias = g.external("F32", n_out, n_exp, name=f"{name}.bias", kind="e")
                out = g.same("ADD_ID", out, bias, selected)
            return out

        up = experts_mm(n_ff, e, cur, "ffn_up_exps")
        gate = experts_mm(n_ff, e, cur, "ffn_gate_exps")
        down = experts_mm(e, n_ff, g.same("GLU", gate, up), "ffn_down_exps")
        experts = down if weight_before else g.same("MUL", down, weights)
        g.expand(experts)
        views = [g.view(experts, (e, n_tok), (experts.nb[2],)) for _ in range(n_used)]
        for view in views:
            g.expand(view)
        out = views[0]
        for view in views[1:]:
            out = g.f32("ADD", (e, n_tok), out, view)
            g.expand(out)
        return g.cont(out) if n_used == 1 else out

    def layers(self) -> Iterator[tuple[int, LayerSpec]]:
        """The layers in order, each external built meanwhile tagged with its layer; after the
        last, the output layer's."""
        keep = self.keep
        for il, layer in enumerate(self.spec.layers):
            if keep is not None and il not in keep:
                continue
            self.g.layer = il
            yield il, layer
        self.g.layer = self.spec.n_layer

    def output(
        self,
        x: Tensor,
        *,
        final_softcap: bool = False,
        layer_norm: bool = False,
        logit_scale: bool = False,
    ) -> None:
        """The final norm (``t_embd``) and the logits (``t_logits``): graph outputs, which
        ggml-alloc never frees or reuses. ``logit_scale``: Granite's division of the logits."""
        g = self.g
        g.layer = self.spec.n_layer
        cur = self.layer_norm(x) if layer_norm else self.norm(x)
        cur.mark("output")
        logits = self.linear(cur, self.spec.n_vocab, name="output")
        if final_softcap:  # scale, tanh, scale: in place
            logits = g.same("SCALE", g.same("UNARY", g.same("SCALE", logits)))
        if logit_scale:  # in place
            logits = g.same("SCALE", logits)
        logits.mark("output")
        g.expand(logits)
