"""The recurrent pieces of llama.cpp's graphs: the recurrent-state lookups (``build_rs``), the
Mamba and Mamba2 mixers (``mamba-base.cpp``), LFM2's short convolution (``lfm2.cpp``) and
RWKV-6's time and channel mixes (``rwkv6-base.cpp``), as shape-only ggml ops.

Each recurrent layer reads one state row per sequence (a cell per sequence in the reserve) and
writes the new state back with a copy into the external state tensor.
"""

from __future__ import annotations

from membudget.engines.llamacpp.ggml import Tensor
from membudget.engines.llamacpp.ops import (
    GraphBuilder,
    GraphSettings,
    row_size,
    tensor_width,
)
from membudget.model import ModelSpec, RecurrentSpec

__all__ = ["RecurrentBuilder"]


class RecurrentBuilder(GraphBuilder):
    """:class:`GraphBuilder` with the recurrent layers."""

    def __init__(
        self, spec: ModelSpec, settings: GraphSettings, keep: frozenset[int] | None = None
    ) -> None:
        super().__init__(spec, settings, keep)
        self.w1_dim = tensor_width(spec, "blk.0.time_mix_w1.weight")
        self.decay_dim = tensor_width(spec, "blk.0.time_mix_decay_w1.weight")

    def rs_input(self) -> None:
        """``build_rs_inp``: one state-copy index per recurrent cell (a cell per sequence)."""
        self.inputs["s_copy"] = self.g.input("I32", self.s.n_seqs, name="rs_s_copy")

    def rs_rows(self, n_state: int) -> tuple[Tensor, Tensor]:
        """``build_rs`` up to its lookup: the layer's state rows (one zeroed in place) and
        the main copy indices."""
        g, n = self.g, self.s.n_seqs
        rows = g.reshape(g.external("F32", n_state, n, kind="c"), n_state, n)
        g.expand(g.inplace("SCALE", g.view(rows, (n_state,), ())))
        return rows, g.view(self.inputs["s_copy"], (n,), ())

    def rs_extra(self, rows: Tensor) -> None:
        """``build_rs`` after its lookup: copy the other cells' states (none in the reserve)."""
        g = self.g
        extra = g.get_rows(rows, g.view(self.inputs["s_copy"], (0,), ()))
        g.expand(g.copy_into(extra, g.view(rows, (rows.ne[0], 0), (rows.nb[1],))))

    def recurrent(self) -> RecurrentSpec:
        r = self.spec.recurrent
        if r is None:
            raise ValueError(f"{self.spec.name}: a recurrent layer without recurrent geometry")
        return r

    def conv_window(self, width: int, taps: int | None = None) -> Tensor:
        """The conv states through ``build_rs``: each sequence's last ``taps`` inputs (by
        default ``d_conv - 1``) of ``width`` channels, as ``[taps, width, n_seqs]``."""
        g = self.g
        taps = self.recurrent().d_conv - 1 if taps is None else taps
        rows, main = self.rs_rows(taps * width)
        conv = g.get_rows(rows, main)
        g.expand(conv)
        self.rs_extra(rows)
        return g.reshape(conv, taps, width, self.s.n_seqs)

    def shortconv(self, x: Tensor) -> Tensor:
        """LFM2's ``build_shortconv_block``: gated input projection, a causal convolution of
        ``L_cache`` taps over the cached window, gated again, output projection."""
        g, n_tok, n = self.g, self.n_tokens, self.s.n_seqs
        e, d_conv, per_seq = x.ne[0], self.recurrent().d_conv, n_tok // n
        bcx = self.linear(g.reshape(x, e, per_seq, n), 3 * e)
        chunk = (e, per_seq, n)
        b, c, xs = (g.view(bcx, chunk, bcx.nb[1:3]) for _ in range(3))
        bx = g.transpose(g.same("MUL", b, xs))
        conv = self.conv_window(e, d_conv - 1)
        bx = g.f32("CONCAT", (d_conv - 1 + per_seq, e, n), conv, bx)
        snap = g.view(bx, (d_conv - 1, e, n), bx.nb[1:3])
        g.expand(g.copy_into(snap, g.external("F32", (d_conv - 1) * e, n, kind="c")))
        conv_out = g.f32("SSM_CONV", (e, per_seq, n), bx, g.external("F32", d_conv, e))
        y = self.linear(g.same("MUL", c, conv_out), e)
        return g.reshape(y, e, n_tok)

    def rwkv6_time_mix(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """``build_rwkv6_time_mix`` (RWKV-6 with separate lerps): data-dependent token shift,
        receptance/key/value/gate, the decay, WKV6 over the cached state, group norm, gate."""
        g, n_tok, n = self.g, self.n_tokens, self.s.n_seqs
        e, head = x.ne[0], self.recurrent().head_dim
        n_head = e // head
        mix = self.w1_dim // 5
        sx = g.reshape(g.same("SUB", x_prev, x), e, n_tok)
        cur = g.reshape(x, e, n_tok)
        xxx = g.same("ADD", g.same("MUL", sx, g.external("F32", e)), cur)
        xxx = g.same("UNARY", self.linear(xxx, 5 * mix))
        xxx = g.cont(g.permute(g.reshape(xxx, mix, 1, 5, n_tok), 0, 1, 3, 2))
        w2 = g.reshape(g.external("F16", mix, e, 5), mix, e, 1, 5)
        xxx = g.mul_mat(w2, xxx)
        parts = [g.view(xxx, (e, n_tok), (xxx.nb[1],)) for _ in range(5)]
        xw, xk, xv, xr, xg = (
            g.same("ADD", g.same("MUL", g.same("ADD", p, g.external("F32", e)), sx), cur)
            for p in parts
        )
        r = g.reshape(self.linear(xr, e), head, n_head, n_tok)
        k = g.reshape(self.linear(xk, e), head, n_head, n_tok)
        v = g.reshape(self.linear(xv, e), head, n_head, n_tok)
        gate = g.same("UNARY", self.linear(xg, e))
        w = self.linear(g.same("UNARY", self.linear(xw, self.decay_dim)), e, self.decay_dim)
        w = g.same(
            "UNARY", g.same("UNARY", g.same("UNARY", g.same("ADD", w, g.external("F32", e))))
        )
        w = g.reshape(w, head, n_head, n_tok)
        n_state = head * e
        srows, smain = self.rs_rows(n_state)
        state = g.get_rows(srows, smain)
        g.expand(state)
        self.rs_extra(srows)
        first = g.external("F32", head, n_head)
        out = g.f32("RWKV_WKV6", (e, n_tok + head * n), k, v, r, first, w, state)
        y = g.view(out, (e * n_tok,), ())
        tail = g.view(out, (n_state * n,), ())
        g.expand(g.copy_into(tail, g.external("F32", n_state * n, kind="c")))
        y = g.reshape(g.same("NORM", g.reshape(y, head, n_head, n_tok)), e, n_tok)
        y = g.same("ADD", g.same("MUL", y, g.external("F32", e)), g.external("F32", e))
        y = self.linear(g.same("MUL", y, gate), e)
        return g.reshape(y, e, n_tok // n, n)

    def rwkv6_channel_mix(self, x: Tensor, x_prev: Tensor) -> Tensor:
        """``build_rwkv6_channel_mix``: token-shifted key (squared ReLU) gated by receptance."""
        g, e = self.g, x.ne[0]
        sx = g.same("SUB", x_prev, x)
        xk = g.same("ADD", g.same("MUL", sx, g.external("F32", e)), x)
        xr = g.same("ADD", g.same("MUL", sx, g.external("F32", e)), x)
        r = g.same("UNARY", self.linear(xr, e))
        k = g.same("SQR", g.same("UNARY", self.linear(xk, self.spec.n_ff)))
        return g.same("MUL", r, self.linear(k, e, self.spec.n_ff))

    def mamba(self, x: Tensor) -> Tensor:
        """``build_mamba_layer`` (Mamba 1): input projection, causal conv, the dt/B/C
        projection, selective scan with one head per channel, gate, output projection."""
        g, spec, n_tok, n = self.g, self.spec, self.n_tokens, self.s.n_seqs
        r = self.recurrent()
        d_inner, d_state, dt_rank = r.d_inner, r.d_state, r.n_head
        per_seq = n_tok // n
        n_conv = (r.d_conv - 1) * d_inner
        conv = self.conv_window(d_inner)
        xz = self.linear(g.reshape(x, x.ne[0], per_seq, n), 2 * d_inner)
        xs = g.view(xz, (d_inner, per_seq, n), xz.nb[1:3])
        z = g.view(xz, (d_inner, per_seq, n), xz.nb[1:3])
        conv_x = g.f32("CONCAT", (r.d_conv - 1 + per_seq, d_inner, n), conv, g.transpose(xs))
        last = g.view(conv_x, (r.d_conv - 1, d_inner, n), conv_x.nb[1:3])
        g.expand(g.copy_into(last, g.external("F32", n_conv * n, kind="c")))
        xs = g.f32("SSM_CONV", (d_inner, per_seq, n), conv_x, g.external("F32", r.d_conv, d_inner))
        xs = g.same("UNARY", g.same("ADD", xs, g.external("F32", d_inner)))  # + bias, SiLU
        x_db = self.linear(xs, dt_rank + 2 * d_state)
        dt = g.view(x_db, (dt_rank, per_seq, n), x_db.nb[1:3])
        group = (row_size(x_db, d_state), *x_db.nb[1:3])
        bs = g.view(x_db, (d_state, 1, per_seq, n), group)
        cs = g.view(x_db, (d_state, 1, per_seq, n), group)
        if self.stores(".ssm_dt_norm.weight"):
            dt, bs, cs = self.norm(dt), self.norm(bs), self.norm(cs)
        else:
            dt = g.cont(dt)
        dt = g.same("ADD", self.linear(dt, d_inner, dt_rank), g.external("F32", d_inner))
        gate_in = xs
        x4 = g.reshape(xs, 1, d_inner, per_seq, n)
        n_ssm = d_state * d_inner
        srows, smain = self.rs_rows(n_ssm)
        states = g.reshape(srows, d_state, 1, d_inner, n)
        a = g.external("F32", d_state, d_inner, kind="a")
        y_ssm = g.f32("SSM_SCAN", (x4.n_elements + n_ssm * n,), states, x4, dt, a, bs, cs, smain)
        g.expand(y_ssm)
        self.rs_extra(srows)
        tail = g.view(y_ssm, (n_ssm * n,), ())
        g.expand(g.copy_into(tail, g.external("F32", n_ssm * n, kind="c")))
        y = g.view(y_ssm, (d_inner, per_seq, n), x4.nb[2:4])
        y = g.same("ADD", y, g.same("MUL", gate_in, g.external("F32", d_inner)))
        y = g.same("GLU", g.cont(z), y)
        cur = self.linear(y, spec.n_embd, d_inner)
        return g.reshape(cur, cur.ne[0], n_tok)

    def mamba2(self, x: Tensor) -> Tensor:
        """``build_mamba2_layer``: input projection, causal conv over the cached window,
        selective scan, gated norm, output projection."""
        g, spec, n_tok, n = self.g, self.spec, self.n_tokens, self.s.n_seqs
        r = self.recurrent()
        d_inner, d_state, n_group, n_head = r.d_inner, r.d_state, r.n_group, r.n_head
        head_dim, per_seq = d_inner // n_head, n_tok // n
        d_xbc = d_inner + 2 * n_group * d_state
        n_conv = (r.d_conv - 1) * d_xbc
        conv = self.conv_window(d_xbc)
        zx = self.linear(x, 2 * d_inner + 2 * n_group * d_state + n_head)
        zx = g.reshape(zx, zx.ne[0], per_seq, n)
        z = g.view(zx, (head_dim, n_head, per_seq, n), (row_size(zx, head_dim), *zx.nb[1:3]))
        xbc = g.view(zx, (d_xbc, per_seq, n), zx.nb[1:3])
        dt = g.view(zx, (n_head, per_seq, n), zx.nb[1:3])
        conv_x = g.f32("CONCAT", (r.d_conv - 1 + per_seq, d_xbc, n), conv, g.transpose(xbc))
        last = g.view(conv_x, (r.d_conv - 1, d_xbc, n), conv_x.nb[1:3])
        g.expand(g.copy_into(last, g.external("F32", n_conv, n, kind="c")))
        xbc = g.f32("SSM_CONV", (d_xbc, per_seq, n), conv_x, g.external("F32", r.d_conv, d_xbc))
        xbc = g.same("UNARY", g.same("ADD", xbc, g.external("F32", d_xbc)))  # + bias, SiLU
        head = (row_size(xbc, head_dim), *xbc.nb[1:3])
        group = (row_size(xbc, d_state), *xbc.nb[1:3])
        xs = g.view(xbc, (head_dim, n_head, per_seq, n), head)
        bs = g.view(xbc, (d_state, n_group, per_seq, n), group)
        cs = g.view(xbc, (d_state, n_group, per_seq, n), group)
        dt = g.same("ADD", g.cont(dt), g.external("F32", n_head))
        n_ssm = d_state * d_inner
        srows, smain = self.rs_rows(n_ssm)
        states = g.reshape(srows, d_state, head_dim, n_head, n)
        a = g.external("F32", 1, n_head, kind="a")
        y_ssm = g.f32("SSM_SCAN", (xs.n_elements + n_ssm * n,), states, xs, dt, a, bs, cs, smain)
        g.expand(y_ssm)
        self.rs_extra(srows)
        tail = g.view(y_ssm, (n_ssm, n, 1), (row_size(y_ssm, n_ssm), row_size(y_ssm, n_ssm * n)))
        g.expand(g.copy_into(tail, g.external("F32", n_ssm, n, kind="c")))
        stride = xs.nb[1]
        y = g.view(
            y_ssm,
            (head_dim, n_head, per_seq, n),
            (stride, n_head * stride, per_seq * n_head * stride),
        )
        y = g.same("ADD", y, g.same("MUL", xs, g.external("F32", 1, n_head)))
        y = g.same("GLU", g.cont(z), y)
        if self.stores(".ssm_norm.weight"):
            y = self.norm(g.reshape(y, d_inner // n_group, n_group, per_seq, n))
        return self.linear(g.reshape(y, d_inner, n_tok), spec.n_embd, d_inner)

    def gated_delta_net(self, x: Tensor, *, repeat: bool = True) -> Tensor:
        """Qwen3-Next's ``build_layer_attn_linear`` (``build_qkvz`` in either layout): q/k/v/z
        and beta/alpha projections, a causal conv over the cached window, L2-normed q and k
        repeated to the value heads (Qwen3-Next; ``repeat`` off for Qwen3.5, whose fused op
        broadcasts them), the fused gated delta net over the cached state (the CPU backend's
        fused op), a norm gated by z, the output projection."""
        g, n_tok, n = self.g, self.n_tokens, self.s.n_seqs
        r = self.recurrent()
        hk, n_k, n_v = r.d_state, r.n_group, r.n_head
        hv, per_seq = r.d_inner // n_v, n_tok // n
        per_k = n_v // n_k
        if self.stores(".attn_gate.weight"):  # separate qkv and z projections
            mixed = g.reshape(
                self.linear(x, 2 * hk * n_k + hv * n_v), 2 * hk * n_k + hv * n_v, per_seq, n
            )
            z = self.linear(x, hv * n_v)
        else:  # one ssm_in projection, regrouped per key head
            qkvz = self.linear(x, 2 * hk * n_k + 2 * hv * n_v)
            split = g.reshape(qkvz, 2 * hk + 2 * hv * per_k, n_k, per_seq, n)
            stride = split.nb[1:4]
            query = g.view(split, (hk, n_k, per_seq, n), stride)
            key = g.view(split, (hk, n_k, per_seq, n), stride)
            value = g.view(split, (hv * per_k, n_k, per_seq, n), stride)
            z = g.cont(g.view(split, (hv * per_k, n_k, per_seq, n), stride))
            flat_q = g.cont(query, hk * n_k, per_seq, n)
            flat_k = g.cont(key, hk * n_k, per_seq, n)
            mixed = g.f32("CONCAT", (2 * hk * n_k, per_seq, n), flat_q, flat_k)
            flat_v = g.cont(value, hv * n_v, per_seq, n)
            mixed = g.f32("CONCAT", (2 * hk * n_k + hv * n_v, per_seq, n), mixed, flat_v)
        if self.stores(".ssm_beta.weight"):  # Qwen3.5: separate projections
            beta = g.same("UNARY", g.reshape(self.linear(x, n_v), 1, n_v, per_seq, n))
            alpha = g.reshape(self.linear(x, n_v), n_v, per_seq, n)
        else:  # Qwen3-Next: one projection, regrouped per key head
            ba = g.reshape(self.linear(x, 2 * n_v), 2 * per_k, n_k, per_seq, n)
            beta = g.same("UNARY", g.cont(g.view(ba, (per_k, n_k, per_seq, n), ba.nb[1:4])))
            beta = g.reshape(beta, 1, n_v, per_seq, n)
            alpha = g.cont(g.view(ba, (per_k, n_k, per_seq, n), ba.nb[1:4]), n_v, per_seq, n)
        gate = g.same("ADD", alpha, g.external("F32", n_v))
        gate = g.same("MUL", g.same("UNARY", gate), g.external("F32", n_v))  # softplus, x A
        gate = g.reshape(gate, 1, n_v, per_seq, n)
        channels = mixed.ne[0]
        conv = self.conv_window(channels)
        conv_in = g.f32("CONCAT", (r.d_conv - 1 + per_seq, channels, n), conv, g.transpose(mixed))
        last = g.view(conv_in, (r.d_conv - 1, channels, n), conv_in.nb[1:3])
        g.expand(g.copy_into(last, g.external("F32", (r.d_conv - 1) * channels, n)))
        n_state = hv * hv * n_v
        srows, smain = self.rs_rows(n_state)
        state = g.get_rows(srows, smain)
        g.expand(state)
        self.rs_extra(srows)
        state = g.reshape(state, hv, hv, n_v, n)
        conv_out = g.f32(
            "SSM_CONV", (channels, per_seq, n), conv_in, g.external("F32", r.d_conv, channels)
        )
        conv_out = g.same("UNARY", conv_out)  # SiLU
        row = row_size(conv_out, channels)
        heads = (row_size(conv_out, hk), row, row * per_seq)
        q = g.same("SCALE", g.same("RMS_NORM", g.view(conv_out, (hk, n_k, per_seq, n), heads)))
        k = g.same("SCALE", g.same("RMS_NORM", g.view(conv_out, (hk, n_k, per_seq, n), heads)))
        v = g.view(conv_out, (hv, n_v, per_seq, n), (row_size(conv_out, hv), row, row * per_seq))
        if n_k != n_v and repeat:
            q, k = (
                g.reshape(
                    g.f32("REPEAT", (hk, per_k, n_k, n_tok), g.reshape(t, hk, 1, n_k, n_tok)),
                    hk,
                    n_v,
                    per_seq,
                    n,
                )
                for t in (q, k)
            )
        out = g.f32("GATED_DELTA_NET", (hv * n_v, per_seq * n + hv * n), q, k, v, gate, beta, state)
        y = g.view(
            out,
            (hv, n_v, per_seq, n),
            (row_size(out, hv), row_size(out, hv * n_v), row_size(out, hv * n_v * per_seq)),
        )
        new_state = g.view(
            out,
            (hv, hv, n_v, n),
            (row_size(out, hv), row_size(out, hv * hv), row_size(out, n_state)),
        )
        g.expand(g.copy_into(new_state, g.external("F32", n_state, n)))
        gated = g.same("UNARY", g.reshape(z, hv, n_v, per_seq, n))  # SiLU of z
        y = g.same("MUL", self.norm(y), gated)
        y = self.linear(g.reshape(y, hv * n_v, per_seq, n), self.spec.n_embd, hv * n_v)
        return g.reshape(y, self.spec.n_embd, n_tok)
