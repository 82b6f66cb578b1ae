"""Where llama.cpp's layers go: the search over placements behind every answer of the planner.

A placement is what llama.cpp's offload flags choose (``llama_model::load_tensors``):

- ``-ngl N``: the last ``N`` of the ``n_layer + 1`` slots (the output layer last) go to the
  devices; slots ``0 .. s - 1`` (``s = n_layer + 1 - N``) stay on the CPU;
- ``-ts``: the offloaded slots are cut into consecutive blocks, one per device, in the engine's
  device order (RPC servers first, then local GPUs); the planner writes the block sizes as
  whole layer counts, which llama.cpp's float split reproduces exactly;
- ``--n-cpu-moe K``: the routed experts of layers ``0 .. K - 1`` stay on the CPU.

**The choices the planner makes.** Flags the user pins are kept. For the others it considers
every ``-ngl`` and every split of the offloaded slots into consecutive blocks; for a mixture of
experts, every ``--n-cpu-moe`` with all layers offloaded, and every ``-ngl`` with no experts or
all experts (``--cpu-moe``) on the CPU. Over that space the search is exact:

- for a given ``s`` and ``K``, the devices can hold slots ``s .. n_layer`` exactly when filling
  each device in order with as many slots as fit succeeds (slot costs are non-negative and
  add up; a device that takes a slot also reserves the compute buffer);
- the GPU side only gets easier as ``s`` or ``K`` grows and the CPU side only harder, so the
  least ``s`` (or ``K``) that the devices can hold is the one to check the CPU against;
- among placements that fit, it prefers the one whose CPU reads the fewest weight bytes per
  token (decoding is bound by memory bandwidth; of the routed experts only the ones used are
  read, which is why ``--n-cpu-moe`` usually beats moving whole layers), then spreads the blocks
  so that every device keeps the same share of its budget free.

Every figure comes from the tables of :mod:`membudget.engines.llamacpp.layout`, the ones
:func:`~membudget.engines.llamacpp.estimate_llamacpp` sums, so a placement's cost here is the
estimate's to the byte.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial

from membudget.engines.llamacpp import (
    LlamaCppRules,
    LlamaCppSettings,
    graph_bytes,
    host_compute_bytes,
    host_pins,
    output_bytes,
    repack_types,
    resolve,
    scheduled_split,
)
from membudget.engines.llamacpp.devices import (
    CPU,
    OP_OFFLOAD_MIN_BATCH,
    layer_devices,
    offload_device,
    split_counts,
)
from membudget.engines.llamacpp.layout import CacheTable, WeightTable, cache_table
from membudget.engines.llamacpp.layout import weight_table as _weight_table
from membudget.model import ModelSpec

__all__ = ["Pins", "Placement", "Placer", "Solution", "least"]


@dataclass(frozen=True, slots=True)
class Pins:
    """Offload flags the user set; ``None`` (or an empty split) leaves them to the planner."""

    n_gpu_layers: int | None = None
    tensor_split: tuple[float, ...] = ()
    n_cpu_moe: int | None = None

    @property
    def pinned(self) -> bool:
        return (
            self.n_gpu_layers is not None or bool(self.tensor_split) or self.n_cpu_moe is not None
        )


@dataclass(frozen=True, slots=True)
class Placement:
    """``s`` slots on the CPU, then ``counts[d]`` slots on device ``d`` in order; the routed
    experts of layers below ``n_cpu_moe`` on the CPU."""

    cpu_slots: int
    counts: tuple[int, ...]
    n_cpu_moe: int


@dataclass(frozen=True, slots=True)
class Solution:
    """The placement chosen for one context and sequence count, and whether it fits (what each
    device then needs is the estimate's, :func:`~membudget.engines.llamacpp.estimate_llamacpp`)."""

    placement: Placement
    settings: LlamaCppSettings
    fits: bool


class _Costs:
    """Prefix sums of slot costs for one context and sequence count.

    A device holds slots as CUDA allocates them, or (``host``: a CPU RPC worker) as the CPU
    backend does."""

    def __init__(
        self,
        w: WeightTable,
        c: CacheTable,
        graph: int,
        host: int,
        out: int,
        offload: int = -1,
        split: tuple[int, int] | None = None,
    ) -> None:
        n = w.n_slots
        self.n_slots = n
        self.graph = graph
        self.host = host
        self.split = split
        """Host and device compute buffers when the one device holds every layer and every
        expert (the scheduler's figures, as the estimate has them)."""
        self.offload = offload
        """The device that takes the CPU layers' large-batch products (the first CUDA device),
        which therefore reserves a compute buffer even when it holds no layer; -1: none."""
        self.impossible = False
        """Whether the weights and caches alone fit under no placement (then no placement
        needs its compute buffers checked)."""
        self.simulated = False
        """Whether ``graph`` is a simulated graph (the scheduler's split exists only then)."""
        self.settings: LlamaCppSettings | None = None
        """The settings these costs are for, when the scheduler's split can be asked for
        placements of them (several devices and a simulated graph)."""
        self.seen: dict[
            tuple[bool, bool], tuple[tuple[int | None, ...], tuple[int | None, ...], int]
        ] = {}
        """The scheduler's compute buffers of the last placement of each kind (CPU layers or
        not, experts on the CPU or not) checked exactly: each device's when it held layers,
        each device's when it held none (None where not seen), and the CPU's. Placements of
        that kind are costed with them."""
        dev_full = ([0] * (n + 1), [0] * (n + 1))  # CUDA rules, CPU rules
        dev_exps = ([0] * (n + 1), [0] * (n + 1))
        cpu_full = [0] * (n + 1)
        cpu_exps = [0] * (n + 1)
        cpu_dense = [0] * (n + 1)
        last = n - 1
        for i in range(n):
            cache = c.slot_bytes(i)
            caches = (c.slot_bytes(i, gpu=True), cache)
            for kind, (dense, exps, tied) in enumerate(
                (
                    (w.gpu_dense[i], w.gpu_exps[i], w.tied_output_gpu),
                    (w.cpu_dense[i], w.cpu_exps[i], w.tied_output_cpu),
                )
            ):
                copy = tied if i == last else 0  # the output's copy of token_embd
                dev_full[kind][i + 1] = dev_full[kind][i] + dense + exps + caches[kind] + copy
                dev_exps[kind][i + 1] = dev_exps[kind][i] + exps
            cpu_full[i + 1] = cpu_full[i] + w.cpu_dense[i] + w.cpu_exps[i] + cache
            cpu_exps[i + 1] = cpu_exps[i] + w.cpu_exps[i]
            cpu_dense[i + 1] = cpu_dense[i] + w.cpu_dense[i]
        self.dev_full, self.dev_exps = dev_full, dev_exps
        self.cpu_full, self.cpu_exps, self.cpu_dense = cpu_full, cpu_exps, cpu_dense
        # The input layer and a tensor-less model's weights always stay on the CPU, as does
        # the output buffer.
        self.cpu_fixed = w.flat_bytes + w.input_bytes + out

    def least_total(self) -> int:
        """Bytes no placement goes below: the CPU's fixed share, and each slot where it costs
        least (compute buffers left out)."""
        n = self.n_slots
        total = self.cpu_fixed
        for i in range(n):
            total += min(
                self.cpu_full[i + 1] - self.cpu_full[i],
                self.dev_full[0][i + 1] - self.dev_full[0][i],
                self.dev_full[1][i + 1] - self.dev_full[1][i],
            )
        return total

    def gpu(self, a: int, b: int, k: int, host: bool = False) -> int:
        """Bytes of slots ``a .. b - 1`` on a device, experts below layer ``k`` left out."""
        full, exps = self.dev_full[host], self.dev_exps[host]
        return (full[b] - full[a]) - (exps[min(b, k)] - exps[min(a, k)])

    def cpu(self, s: int, k: int, any_device: bool) -> int:
        """Resident CPU bytes with slots ``0 .. s - 1`` there and experts below ``k``."""
        experts = self.cpu_exps[max(k, s)] - self.cpu_exps[s] if k > s else 0
        # With no layer on a device the CPU runs the whole graph, unless a device takes its
        # large-batch ops (CUDA's op offload): then the scheduler's figures apply as well
        seen = self.seen.get((s > 0, k > 0)) if any_device or self.offload >= 0 else None
        if seen is not None:
            compute = seen[2]
        elif s > 0 or not any_device:
            compute = self.graph
        else:
            compute = self.split[0] if self.split is not None and k == 0 else self.host
        return self.cpu_fixed + self.cpu_full[s] + experts + compute

    def device_graph(self, s: int, k: int, j: int) -> int:
        """Device ``j``'s compute buffer when the CPU keeps ``s`` slots and experts below
        ``k``."""
        seen = self.seen.get((s > 0, k > 0))
        if seen is not None:
            held = seen[0][j]
            if held is not None:
                return held
        return self.split[1] if self.split is not None and s == 0 and k == 0 else self.graph

    def empty_device(self, s: int, k: int, j: int) -> int:
        """Device ``j``'s compute buffer when it holds no layer."""
        seen = self.seen.get((s > 0, k > 0))
        if seen is not None:
            empty = seen[1][j]
            if empty is not None:
                return empty
        return self.device_graph(s, k, j) if j == self.offload else 0

    def adopt(self, p: Placement, names: Sequence[str], exact: dict[str, int]) -> bool:
        """Cost placements of ``p``'s kind with the scheduler's buffers ``exact`` of ``p``;
        whether that changed anything."""
        key = (p.cpu_slots > 0, p.n_cpu_moe > 0)
        pairs = list(zip(names, p.counts, strict=True))
        old = self.seen.get(key)
        old_held, old_empty = (old[0], old[1]) if old else ((None,) * len(pairs),) * 2
        held = tuple(
            exact.get(name, 0) if n else was for (name, n), was in zip(pairs, old_held, strict=True)
        )
        empty = tuple(
            was if n else exact.get(name, 0)
            for (name, n), was in zip(pairs, old_empty, strict=True)
        )
        entry = (held, empty, exact.get(CPU, 0))
        if self.seen.get(key) == entry:
            return False
        self.seen[key] = entry
        return True

    def cpu_read(self, s: int, k: int, used: int, total: int) -> int:
        """Weight bytes the CPU reads per token, times ``total``: its dense weights whole, its
        routed experts ``used`` of ``total`` (decoding is bound by memory bandwidth)."""
        experts = self.cpu_exps[max(k, s)]
        return self.cpu_dense[s] * total + experts * used

    def loads(self, s: int, k: int, counts: Sequence[int], hosts: Sequence[bool]) -> list[int]:
        out, pos = [], s
        for j, (n, host) in enumerate(zip(counts, hosts, strict=True)):
            if n:
                out.append(self.device_graph(s, k, j) + self.gpu(pos, pos + n, k, host))
            else:
                out.append(self.empty_device(s, k, j))
            pos += n
        return out

    def fill(
        self, s: int, k: int, caps: Sequence[int], hosts: Sequence[bool]
    ) -> tuple[int, ...] | None:
        """Each device in order takes as many slots as fit; ``None`` if some are left over."""
        n = self.n_slots
        pos, counts = s, []
        for j, (cap, host) in enumerate(zip(caps, hosts, strict=True)):
            room = cap - self.device_graph(s, k, j)
            if pos == n or room < 0 or self.gpu(pos, pos + 1, k, host) > room:
                counts.append(0)
                continue
            lo, hi = pos + 1, n
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.gpu(pos, mid, k, host) <= room:
                    lo = mid
                else:
                    hi = mid - 1
            counts.append(lo - pos)
            pos = lo
        return tuple(counts) if pos == n else None

    def spill(self, s: int, k: int, caps: Sequence[int], hosts: Sequence[bool]) -> tuple[int, ...]:
        """What :meth:`fill` would give with the slots left over on the last device."""
        n = self.n_slots
        pos, counts = s, []
        for j, (cap, host) in enumerate(zip(caps, hosts, strict=True)):
            room = cap - self.device_graph(s, k, j)
            take = 0
            while pos + take < n and self.gpu(pos, pos + take + 1, k, host) <= room:
                take += 1
            counts.append(take)
            pos += take
        counts[-1] += n - pos
        return tuple(counts)


_Seen = tuple[tuple[int | None, ...], tuple[int | None, ...], int]


def _between(a: int, b: int, x0: int, x1: int, x: int) -> int:
    return max(0, a + (b - a) * (x - x0) // (x1 - x0))


@dataclass(frozen=True, slots=True)
class _Figures:
    """The compute buffers one exact solve ended with (see :attr:`Placer.figures`)."""

    graph: int
    split: tuple[int, int] | None
    seen: tuple[tuple[tuple[bool, bool], _Seen], ...]

    @staticmethod
    def between(a: _Figures, b: _Figures, x0: int, x1: int, x: int) -> _Figures:
        """Each figure of ``a`` (at ``x0``) and ``b`` (at ``x1``) taken linearly to ``x``;
        where only one of them has a figure, that one."""

        def one(p: int | None, q: int | None) -> int | None:
            if p is None or q is None:
                return p if q is None else q
            return _between(p, q, x0, x1, x)

        def each(p: tuple[int | None, ...], q: tuple[int | None, ...]) -> tuple[int | None, ...]:
            return tuple(one(u, v) for u, v in zip(p, q, strict=True))

        split = a.split or b.split
        if a.split is not None and b.split is not None:
            split = (
                _between(a.split[0], b.split[0], x0, x1, x),
                _between(a.split[1], b.split[1], x0, x1, x),
            )
        seen = dict(a.seen)
        for kind, theirs in b.seen:
            mine = seen.get(kind)
            if mine is None:
                seen[kind] = theirs
                continue
            seen[kind] = (
                each(mine[0], theirs[0]),
                each(mine[1], theirs[1]),
                _between(mine[2], theirs[2], x0, x1, x),
            )
        return _Figures(_between(a.graph, b.graph, x0, x1, x), split, tuple(seen.items()))


_EXACT_ROUNDS = 3
"""How often the placer re-chooses with the scheduler's figures of its last choice."""


def least(lo: int, hi: int, ok: Callable[[int], bool]) -> int | None:
    """The least x in [lo, hi] with ok(x), given ok is monotone (false, then true)."""
    if lo > hi or not ok(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def least_near(lo: int, hi: int, ok: Callable[[int], bool], guess: int) -> int | None:
    """:func:`least`, probing outward from ``guess`` (doubling steps, then bisecting between
    the last two probes): the same answer for a monotone ``ok``, in two probes when the guess
    is right. For an ``ok`` that is costly and a guess that is cheap."""
    if lo > hi:
        return None
    g = min(max(guess, lo), hi)
    step = 1
    if ok(g):
        top = g
        while top > lo:
            x = max(top - step, lo)
            if not ok(x):
                return least(x + 1, top, ok)
            top, step = x, step * 2
        return top
    bottom = g
    while bottom < hi:
        x = min(bottom + step, hi)
        if ok(x):
            return least(bottom + 1, x, ok)
        bottom, step = x, step * 2
    return None


def _swap(f: Callable[[int, int], bool], a: int, b: int) -> bool:
    return f(a, b)


def _last(f: Callable[[int, int], bool], b: int, a: int) -> bool:
    return f(a, b)


class Placer:
    """Chooses the placement for any context and sequence count, for one model, settings,
    set of devices and pins. Results are kept, so the solvers may ask again for free."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: LlamaCppSettings,
        cpu_budget: int,
        devices: Sequence[tuple[str, int]],
        rules: LlamaCppRules | None = None,
        pins: Pins | None = None,
        pool: int | None = None,
        cpu_devices: tuple[str, ...] = (),
    ) -> None:
        self.spec = spec
        self.pool = pool
        """Unified memory: the CPU and every device together (Apple Silicon)."""
        # the devices stay named: flash attention "auto" is resolved against them
        self.base = replace(
            settings,
            n_gpu_layers=0,
            gpus=tuple(name for name, _ in devices),
            tensor_split=(),
            n_cpu_moe=0,
            cpu_devices=(),
        )
        self.rules = rules or LlamaCppRules()
        self.pins = pins or Pins()
        self.cpu_budget = cpu_budget
        self.names = tuple(name for name, _ in devices)
        self.caps = tuple(n for _, n in devices)
        self.hosts = tuple(name in cpu_devices for name in self.names)
        """Which devices allocate as the CPU backend does (CPU RPC workers)."""
        self.offload = offload_device(self.names)
        self.weights = _weight_table(
            spec,
            self.rules.alignment,
            repack_types(settings, self.rules, self.names),
            host_pins(spec, settings, self.names),
        )
        self.moe = spec.is_moe and any(self.weights.gpu_exps)
        self.total_experts = max(1, spec.n_expert) if self.moe else 1
        self.used_experts = max(1, spec.n_expert_used) if self.moe else 1
        self._solved: dict[tuple[int, int], Solution] = {}
        self.figures: dict[tuple[int, int], _Figures] = {}
        """Every compute buffer an exact solve ended with, by (n_ctx, n_parallel): the
        one-backend figure, the scheduler's split of every layer on the one device, and its
        splits of each kind of placement it checked (:attr:`_Costs.seen`)."""

    # -- costs ---------------------------------------------------------------------------
    def settings_for(self, n_ctx: int, n_parallel: int) -> LlamaCppSettings:
        return replace(self.base, n_ctx=n_ctx, n_parallel=n_parallel)

    def _costs(self, s: LlamaCppSettings, compute: int | None = None) -> _Costs:
        r = self.rules
        res = resolve(self.spec, s, r)
        c = cache_table(self.spec, res, s.cache_type_k, s.cache_type_v, r.alignment, r.mla_k_only)
        simulated = False
        if compute is not None:
            graph = compute
        else:
            graph, simulated = graph_bytes(self.spec, res, s, r)
        costs = _Costs(
            self.weights,
            c,
            graph,
            host_compute_bytes(self.spec, res.n_tokens),
            output_bytes(self.spec, s, res.n_seq),
            self.offload if res.n_tokens >= OP_OFFLOAD_MIN_BATCH else -1,
        )
        costs.simulated = simulated
        n = costs.n_slots
        if simulated and len(self.names) == 1 and costs.gpu(0, n, 0, self.hosts[0]) <= self.caps[0]:
            # one device that could hold every layer: the scheduler's split there, as the
            # estimate has it (a device that cannot hold the weights never holds them all)
            one = replace(
                s,
                gpus=self.names,
                n_gpu_layers=self.spec.n_layer + 1,
                cpu_devices=self.names if self.hosts[0] else (),
            )
            split = scheduled_split(self.spec, res, one, r, [self.names[0]] * n)
            if split is not None:
                costs.split = (split[CPU], split[self.names[0]])
                # that placement is costed exactly already: _solve need not choose again
                costs.seen[(False, False)] = ((costs.split[1],), (None,), costs.split[0])
        if simulated and self.names and all(self.hosts) and n >= len(self.names):
            # CPU RPC workers, where the scheduler's split is known for every placement: start
            # from its figures with every layer spread evenly (a device's share barely changes
            # them), then check each choice exactly (_fill, _solve)
            even = split_counts(n, n, [1.0] * len(self.names))
            self._adopt(costs, s, Placement(0, even, 0))
            costs.settings = s
        room = self.cpu_budget + sum(self.caps)
        costs.impossible = costs.least_total() > min(room, room if self.pool is None else self.pool)
        if costs.settings is None and (
            simulated
            and len(self.names) == 1
            and self.names[0].startswith("CUDA")
            and not costs.impossible
        ):
            # one CUDA device, whose split is known for every placement (with CPU layers it
            # takes their large-batch ops and copies what they read): check each choice,
            # unless the weights and caches alone fit under no placement
            costs.settings = s
        return costs

    # -- the search ----------------------------------------------------------------------
    def solve(self, n_ctx: int, n_parallel: int) -> Solution:
        """The placement for ``n_ctx`` and ``n_parallel`` (the best that fits, or, when none
        fits, the one that keeps the most on the devices)."""
        key = (n_ctx, n_parallel)
        found = self._solved.get(key)
        if found is None:
            found = self._solve(self.settings_for(n_ctx, n_parallel))
            self._solved[key] = found
        return found

    def fits(self, n_ctx: int, n_parallel: int) -> bool:
        return self.solve(n_ctx, n_parallel).fits

    def fits_guess(
        self, n_ctx: int, n_parallel: int, along: Callable[[int, int], int | None]
    ) -> bool | None:
        """Whether some placement fits, every compute buffer guessed from the exact solves so
        far: each figure (the one-backend one, and the scheduler's for every kind of placement
        and device) taken linearly between the two solves nearest along ``along`` (a solve's
        (n_ctx, n_parallel) -> its coordinate, None to leave it out). None when no solve is
        known. A cheap guess that guides a search; its answers are checked with :meth:`fits`."""
        x = along(n_ctx, n_parallel)
        if x is None:
            return None
        known = {at: f for (ctx, n), f in self.figures.items() if (at := along(ctx, n)) is not None}
        if not known:
            return None
        xs = sorted(known, key=lambda p: (abs(p - x), p))[:2]
        if len(xs) == 1:
            fig = known[xs[0]]
        else:
            x0, x1 = sorted(xs)
            fig = _Figures.between(known[x0], known[x1], x0, x1, x)
        c = self._costs(self.settings_for(n_ctx, n_parallel), fig.graph)
        c.split = fig.split
        c.seen = dict(fig.seen)
        return any(ok for _, _, ok in self._scored(c))

    def _candidates(self, c: _Costs) -> list[Placement]:
        n = c.n_slots
        n_layer = n - 1
        pins = self.pins
        if not self.names:
            return [Placement(n, (), 0)]
        if pins.tensor_split:
            return self._pinned_split_candidates(c)
        caps = self.caps
        ks: list[int | None]
        if pins.n_cpu_moe is not None:
            ks = [pins.n_cpu_moe]
        elif self.moe:
            ks = [None, 0, n_layer]
        else:
            ks = [0]
        out: list[Placement] = []

        def devices_hold(s: int, k: int) -> bool:
            return self._fill(c, s, k, caps) is not None

        def cheap_hold(s: int, k: int) -> bool:
            return c.fill(s, k, caps, self.hosts) is not None

        def first(
            lo: int, hi: int, f: Callable[[int], bool], g: Callable[[int], bool]
        ) -> int | None:
            """The least x in [lo, hi] with f(x), near the least with the cheaper g(x) when
            f checks each placement with the scheduler."""
            if c.settings is None:
                return least(lo, hi, f)
            guess = least(lo, hi, g)
            return least_near(lo, hi, f, hi if guess is None else guess)

        bound: int | None = None  # the CPU reads of a candidate that fits

        def cannot_win(k: int) -> bool:
            """Whether every placement with experts below ``k`` on the CPU reads more than
            the one that fits already, whatever its CPU slots: it needs at least those that
            leave the devices' budgets room for the weights and caches alone."""
            if bound is None:
                return False
            room = sum(caps)
            s_lb = least(0, n, lambda s: min(c.gpu(s, n, k), c.gpu(s, n, k, True)) <= room)
            reads = c.cpu_read(
                n if s_lb is None else s_lb, k, self.used_experts, self.total_experts
            )
            return reads > bound

        for want in ks:
            if pins.n_gpu_layers is None and want is not None and cannot_win(want):
                continue
            if pins.n_gpu_layers is not None:
                s0 = max(n - pins.n_gpu_layers, 0)
                k = want
                if k is None:
                    k = first(
                        0,
                        n_layer,
                        partial(_swap, devices_hold, s0),
                        partial(_swap, cheap_hold, s0),
                    )
                out.append(self._place(c, s0, n_layer if k is None else k))
            elif want is None:
                # every layer offloaded, the fewest layers' experts on the CPU
                first_k = first(0, n_layer, partial(devices_hold, 0), partial(cheap_hold, 0))
                if first_k is not None:
                    p = self._place(c, 0, first_k)
                    out.append(p)
                    if self._ok(c, p):
                        bound = c.cpu_read(0, first_k, self.used_experts, self.total_experts)
            else:
                # every layer offloaded first: the scheduler's figures for it are not those
                # of a partial offload, so the fewest CPU slots need not be monotone there
                if devices_hold(0, want):
                    least_s: int | None = 0
                else:
                    least_s = first(
                        1,
                        n,
                        partial(_last, devices_hold, want),
                        partial(_last, cheap_hold, want),
                    )
                out.append(self._place(c, n if least_s is None else least_s, want))
        return out

    def _place(self, c: _Costs, s: int, k: int) -> Placement:
        counts = self._fill(c, s, k, self.caps)
        if counts is None:
            # The devices cannot hold what is pinned: share it by budget, as llama.cpp does
            # by free memory when -ts is not given.
            counts = split_counts(c.n_slots, c.n_slots - s, [float(x) for x in self.caps])
        return Placement(s, counts, k)

    def _pinned_split_candidates(self, c: _Costs) -> list[Placement]:
        n = c.n_slots
        n_layer = n - 1
        shares = tuple(self.pins.tensor_split) + (0.0,) * (
            len(self.names) - len(self.pins.tensor_split)
        )
        if self.pins.n_gpu_layers is not None:
            s_range: Sequence[int] = [max(n - self.pins.n_gpu_layers, 0)]
        else:
            s_range = range(n + 1)
        out: list[Placement] = []
        for s in s_range:
            counts = split_counts(n, n - s, shares)
            ks: list[int]
            if self.pins.n_cpu_moe is not None:
                ks = [self.pins.n_cpu_moe]
            elif self.moe:

                def held(kk: int, s: int = s, counts: tuple[int, ...] = counts) -> bool:
                    return self._gpu_ok(c, s, kk, counts)

                first_k = least(0, n_layer, held)
                ks = [0] if first_k is None else [first_k]
            else:
                ks = [0]
            out.extend(Placement(s, counts, k) for k in ks)
        return out

    def _gpu_ok(self, c: _Costs, s: int, k: int, counts: Sequence[int]) -> bool:
        return all(
            load <= cap
            for load, cap in zip(c.loads(s, k, counts, self.hosts), self.caps, strict=True)
        )

    def _scored(
        self, c: _Costs, candidates: Sequence[Placement] | None = None
    ) -> list[tuple[tuple[int, ...], Placement, bool]]:
        scored: list[tuple[tuple[int, ...], Placement, bool]] = []
        for p in self._candidates(c) if candidates is None else candidates:
            gpu_ok = self._gpu_ok(c, p.cpu_slots, p.n_cpu_moe, p.counts)
            cpu_need = c.cpu(p.cpu_slots, p.n_cpu_moe, any(p.counts))
            ok = gpu_ok and cpu_need <= self.cpu_budget
            if ok and self.pool is not None:
                total = cpu_need + sum(c.loads(p.cpu_slots, p.n_cpu_moe, p.counts, self.hosts))
                ok = total <= self.pool
            rank = (
                not ok,
                not gpu_ok,
                c.cpu_read(p.cpu_slots, p.n_cpu_moe, self.used_experts, self.total_experts),
                p.cpu_slots,
                p.n_cpu_moe,
            )
            scored.append((rank, p, ok))
        scored.sort(key=lambda x: x[0])
        return scored

    def _solve(self, settings: LlamaCppSettings) -> Solution:
        c = self._costs(settings)
        try:
            return self._solve_with(c, settings)
        finally:
            self.figures[(settings.n_ctx, settings.n_parallel)] = _Figures(
                c.graph, c.split, tuple(c.seen.items())
            )

    def _solve_with(self, c: _Costs, settings: LlamaCppSettings) -> Solution:
        best, ok = self._pick(c)
        if not c.simulated or not self.names or (not ok and self._hopeless(c, best)):
            return Solution(best, self._settings(settings, best), ok)
        # The scheduler's compute buffers depend on the placement (its splits, their input
        # copies, pipeline parallelism over several devices): cost the chosen placement's kind
        # with its own figures and choose again, until the choice is costed exactly.
        for _ in range(_EXACT_ROUNDS):
            if not self._adopt(c, settings, best):
                break
            best, ok = self._pick(c)
        else:
            if self._adopt(c, settings, best):
                ok = self._ok(c, best)
        return Solution(best, self._settings(settings, best), ok)

    def _hopeless(self, c: _Costs, p: Placement) -> bool:
        """Whether ``p`` fits under no compute buffers at all: then it needs no exact ones."""
        if c.impossible:
            return True
        s, k = p.cpu_slots, p.n_cpu_moe
        experts = c.cpu_exps[max(k, s)] - c.cpu_exps[s] if k > s else 0
        if c.cpu_fixed + c.cpu_full[s] + experts > self.cpu_budget:
            return True
        pos = s
        for n, cap, host in zip(p.counts, self.caps, self.hosts, strict=True):
            if c.gpu(pos, pos + n, k, host) > cap:
                return True
            pos += n
        return False

    def _fill(self, c: _Costs, s: int, k: int, caps: Sequence[int]) -> tuple[int, ...] | None:
        """:meth:`_Costs.fill`, checked against the scheduler: the counts it gives (or, when
        some slots are left over, those with the rest on the last device) are costed with
        their own compute buffers, and filled again, until those buffers stop changing."""
        counts = c.fill(s, k, caps, self.hosts)
        if c.settings is None:
            return counts
        n = c.n_slots
        if min(c.gpu(s, n, k), c.gpu(s, n, k, True)) > sum(caps):
            return None  # the weights and caches alone pass the devices' budgets
        if len(caps) == 1 and c.gpu(s, n, k, self.hosts[0]) > caps[0]:
            return None
        for _ in range(_EXACT_ROUNDS):
            probe = counts or c.spill(s, k, caps, self.hosts)
            if not self._adopt(c, c.settings, Placement(s, probe, k)):
                break
            counts = c.fill(s, k, caps, self.hosts)
        return counts

    def _pick(self, c: _Costs) -> tuple[Placement, bool]:
        _, best, ok = self._scored(c)[0]
        if ok and not self.pins.tensor_split and len(self.names) > 1 and any(best.counts):
            best = self._balance(c, best)
        return best, ok

    def _adopt(self, c: _Costs, settings: LlamaCppSettings, p: Placement) -> bool:
        """Give ``c`` the scheduler's compute buffers of ``p`` (as the estimate has them);
        whether they changed its costs."""
        placed = self._settings(settings, p)
        res = resolve(self.spec, placed, self.rules)
        slots = layer_devices(
            self.spec.n_layer, placed.n_gpu_layers, placed.gpus, placed.tensor_split
        )
        exact = scheduled_split(self.spec, res, placed, self.rules, slots)
        return exact is not None and c.adopt(p, self.names, exact)

    def _ok(self, c: _Costs, p: Placement) -> bool:
        return next(ok for _, q, ok in self._scored(c, [p]) if q == p)

    def _balance(self, c: _Costs, p: Placement) -> Placement:
        """Spread the blocks so each device keeps the largest equal share of its budget free."""
        lo, hi, best = 0, 1 << 16, p.counts
        while lo < hi:
            mid = (lo + hi + 1) // 2
            caps = [cap - cap * mid // (1 << 16) for cap in self.caps]
            counts = c.fill(p.cpu_slots, p.n_cpu_moe, caps, self.hosts)
            if counts is not None:
                lo, best = mid, counts
            else:
                hi = mid - 1
        return replace(p, counts=best)

    def _settings(self, settings: LlamaCppSettings, p: Placement) -> LlamaCppSettings:
        n = self.spec.n_layer + 1
        if not self.names:
            return settings
        if self.pins.tensor_split:
            split = self.pins.tensor_split
        elif len(self.names) > 1 and any(p.counts):
            # (no layer offloaded: no split to print; llama.cpp refuses an all-zero -ts)
            split = tuple(float(x) for x in p.counts)
        else:
            split = ()
        ngl = self.pins.n_gpu_layers if self.pins.n_gpu_layers is not None else n - p.cpu_slots
        return replace(
            settings,
            n_gpu_layers=ngl,
            gpus=self.names,
            tensor_split=split,
            n_cpu_moe=p.n_cpu_moe,
            cpu_devices=tuple(n for n, h in zip(self.names, self.hosts, strict=True) if h),
        )
